//! Configuration: the TOML files' shape, loading with file/line/key errors, validation and reload.

mod engine_checks;
mod error;
mod findings;
mod load;
mod locate;
mod model;
mod reload;
mod summary;
mod validate;
mod values;

pub use error::ConfigError;
pub use load::{check_file, load_engine, load_supervisor, parse_engine, parse_supervisor};
pub use model::*;
pub use reload::{RELOAD_POLL_INTERVAL, watch_supervisor, watch_supervisor_every};
pub use validate::{
    INFO_BATCH_WARN_AT, LINK_PROFILE_NAMES, MAX_BATCH_SIZE, MAX_BATCH_WINDOW,
    MAX_RANDOMIZE_PERCENT, MAX_RESERVED_PERCENT, MAX_RETRIES, validate_engine, validate_supervisor,
};
