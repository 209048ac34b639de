//! Configuration: the TOML files' shape, loading with file/line/key errors, validation and reload.

mod bandwidth;
mod batch_size;
mod diff;
mod engine_checks;
mod error;
mod findings;
mod load;
mod locate;
mod model;
mod reload;
mod samples;
mod summary;
mod validate;
mod values;

pub use diff::{
    ENGINE_LIVE_KEYS, ReloadDiff, changed_keys, engine_live, engine_reload, supervisor_reload,
};
pub use error::ConfigError;
pub use load::{
    check_file, check_file_as, load_engine, load_supervisor, parse_engine, parse_supervisor,
};
pub use model::*;
pub use reload::{
    Overrides, RELOAD_POLL_INTERVAL, watch_supervisor, watch_supervisor_every,
    watch_supervisor_with,
};
pub use samples::FileKind;
pub use validate::{
    INFO_BATCH_WARN_AT, LINK_PROFILE_NAMES, MAX_BATCH_SIZE, MAX_BATCH_WINDOW, MAX_CHECK_ATTEMPTS,
    MAX_RANDOMIZE_PERCENT, MAX_RESERVED_PERCENT, MAX_RETRIES, validate_engine, validate_supervisor,
};
