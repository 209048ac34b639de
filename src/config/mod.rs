//! Configuration: the TOML files' shape, loading with file/line/key errors, validation and reload.

mod model;

pub use model::*;
