//! Mutual TLS between the supervisor and its engines, done with rustls directly (not tonic's
//! TLS) so that it runs inside the simulated link, reloads its files without a restart, and
//! says in words why a handshake failed.
//!
//! - [`files`]: PEM certificates, keys and CA bundles.
//! - [`server`]: the engine's certificate and client verification.
//! - [`client`]: the supervisor's certificate and engine verification.
//! - [`incoming`]: the engine's accept loop, TLS or plaintext, with refusals logged.
//! - [`reason`]: handshake failures in words.
//! - [`identity`]: the name in a peer's certificate.

pub mod client;
pub mod files;
pub mod identity;
pub mod incoming;
pub mod reason;
mod reload;
pub mod server;

pub use client::{ClientTls, ClientTlsFiles};

/// How often the engine and the supervisor check their `[tls]` files for a renewal.
pub const RELOAD_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);
pub use files::TlsFileError;
pub use identity::peer_name;
pub use reason::{HandshakeError, Side};
pub use server::{ServerTls, ServerTlsFiles};
