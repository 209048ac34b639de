//! Checks of single values both configuration files use: `host:port` addresses (an engine's
//! `address`, an engine's `listen`, `metrics_listen` on both sides), host names, http(s) URLs,
//! files read at start (CA files for https among them) and the state directory.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::path::Path;

use crate::check::http_client::Trust;

use super::error::KeyPath;
use super::findings::Findings;

/// The host of a `host:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Host<'a> {
    /// An IP literal.
    Ip(IpAddr),
    /// A DNS name, looked up later.
    Name(&'a str),
}

/// `ip:port`, `[ipv6]:port` (a scope id allowed) or `name:port`, any port 0 to 65535.
fn host_port(address: &str) -> Result<(Host<'_>, u16), String> {
    if let Ok(socket) = address.parse::<SocketAddr>() {
        return Ok((Host::Ip(socket.ip()), socket.port()));
    }
    let (host, port) = if let Some(rest) = address.strip_prefix('[') {
        let (host, port) = rest
            .split_once("]:")
            .ok_or_else(|| "expected [ipv6]:port".to_string())?;
        host.parse::<Ipv6Addr>()
            .map_err(|e| format!("`{host}` is not an IPv6 address: {e}"))?;
        (host, port)
    } else {
        let (host, port) = address
            .rsplit_once(':')
            .ok_or_else(|| "missing `:port`".to_string())?;
        if host.contains(':') {
            return Err("an IPv6 host must be written in brackets, e.g. [::1]:7300".into());
        }
        (host, port)
    };
    if host.is_empty() {
        return Err("missing host".into());
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| format!("`{port}` is not a port (0..=65535)"))?;
    match host.parse::<IpAddr>() {
        Ok(ip) => Ok((Host::Ip(ip), port)),
        Err(_) if is_host_name(host) => Ok((Host::Name(host), port)),
        Err(_) => Err(format!("`{host}` is neither an IP address nor a host name")),
    }
}

/// An address to connect to: [`host_port`] with a port from 1 to 65535.
pub(super) fn check_host_port(address: &str) -> Result<(), String> {
    match host_port(address)? {
        (_, 0) => Err("port 0 cannot be connected to".into()),
        _ => Ok(()),
    }
}

/// Whether `listen` is a loopback address (an IP literal on loopback, or `localhost`), or why
/// it is not `host:port`. Port 0 (any free port) is allowed.
pub(super) fn listen_is_loopback(listen: &str) -> Result<bool, String> {
    Ok(match host_port(listen)?.0 {
        Host::Ip(ip) => ip.is_loopback(),
        Host::Name(name) => name.eq_ignore_ascii_case("localhost"),
    })
}

/// A `metrics_listen` value: empty (no endpoint) or a `host:port` to bind, port 0 allowed. Any
/// host is accepted: the endpoint is read-only.
pub(super) fn check_metrics_listen(findings: &mut Findings, key: KeyPath, listen: &str) {
    if listen.is_empty() {
        return;
    }
    if let Err(why) = host_port(listen) {
        findings.error(
            key,
            format!(
                "`{listen}` is not host:port like 127.0.0.1:9464 (or \"\" for no metrics \
                 endpoint): {why}"
            ),
        );
    }
}

/// A DNS host name: dot-separated labels of letters, digits and `-` (not at either end), each
/// at most 63 long, the last not all digits (so `10.0.0.256` is a bad address, not a name); a
/// trailing dot is allowed.
fn is_host_name(host: &str) -> bool {
    // A trailing dot marks a fully qualified name.
    let host = host.strip_suffix('.').unwrap_or(host);
    let labels: Vec<&str> = host.split('.').collect();
    host.len() <= 253
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|last| !last.chars().all(|c| c.is_ascii_digit()))
}

/// A file the engine or supervisor will read at start.
pub(super) fn check_readable(findings: &mut Findings, key: KeyPath, path: &Path) {
    if let Err(error) = std::fs::File::open(path) {
        findings.error(key, format!("cannot read `{}`: {error}", path.display()));
    }
}

/// A PEM file of CA certificates for https (a rule's or a webhook's `ca`): readable, with at
/// least one certificate usable as a trust anchor. Returns its size in bytes when it is.
pub(super) fn check_ca_file(findings: &mut Findings, key: KeyPath, path: &Path) -> Option<usize> {
    let shown = path.display();
    match std::fs::read_to_string(path) {
        Err(error) => findings.error(key, format!("cannot read `{shown}`: {error}")),
        Ok(pem) => match Trust::from_pem(&pem) {
            Err(error) => findings.error(key, format!("`{shown}`: {error}")),
            Ok(_) => return Some(pem.len()),
        },
    }
    None
}

/// An engine `state_dir`: an existing directory, or a path whose nearest existing ancestor is a
/// writable directory (so the engine can create it at start).
pub(super) fn check_state_dir(path: &Path) -> Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("must not be empty (leave the key out for memory only)".into());
    }
    let shown = path.display();
    let mut existing = path;
    loop {
        match std::fs::metadata(existing) {
            Ok(metadata) if metadata.is_dir() => {
                if metadata.permissions().readonly() {
                    return Err(format!(
                        "`{shown}` cannot be created or written: `{}` is read-only",
                        existing.display()
                    ));
                }
                return Ok(());
            }
            Ok(_) => {
                return Err(format!(
                    "`{shown}` is not a directory path: `{}` is a file",
                    existing.display()
                ));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                match existing.parent() {
                    Some(parent) if !parent.as_os_str().is_empty() => existing = parent,
                    // A relative path whose first component does not exist: created in the
                    // working directory.
                    _ => return Ok(()),
                }
            }
            Err(error) => {
                return Err(format!(
                    "`{shown}` cannot be used: `{}`: {error}",
                    existing.display()
                ));
            }
        }
    }
}

/// An `http://host[:port]/...` or `https://host[:port]/...` URL.
pub(super) fn check_http_url(url: &str) -> Result<(), String> {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return Err(format!("`{url}` is not an http:// or https:// URL"));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("`{url}` has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_forms() {
        assert!(check_host_port("127.0.0.1:7300").is_ok());
        assert!(check_host_port("engine.example:7300").is_ok());
        assert!(check_host_port("[::1]:7300").is_ok());
        assert!(check_host_port("127.0.0.1").is_err());
        assert!(check_host_port(":7300").is_err());
        assert!(check_host_port("host:0").is_err());
        assert!(check_host_port("host:99999").is_err());
        assert!(check_host_port("::1:7300").is_err());
        assert!(check_host_port("http://host:80").is_err());
        assert!(check_host_port("10.0.0.256:7300").is_err());
        assert!(check_host_port("bad_name:7300").is_err());
    }

    #[test]
    fn listen_addresses_are_loopback_by_address_or_by_name() {
        assert_eq!(listen_is_loopback("127.0.0.1:0"), Ok(true));
        assert_eq!(listen_is_loopback("[::1]:7300"), Ok(true));
        assert_eq!(listen_is_loopback("localhost:7300"), Ok(true));
        assert_eq!(listen_is_loopback("0.0.0.0:7300"), Ok(false));
        assert_eq!(listen_is_loopback("engine1.example.net:7300"), Ok(false));
        assert!(listen_is_loopback("engine1.example.net").is_err());
    }

    #[test]
    fn metrics_listen_is_empty_or_host_port() {
        let check = |listen: &str| {
            let mut findings = Findings::default();
            check_metrics_listen(&mut findings, KeyPath::root().key("metrics_listen"), listen);
            findings.into_result(Path::new("t.toml"), None).map(|_| ())
        };
        assert!(check("").is_ok());
        assert!(check("127.0.0.1:0").is_ok());
        assert!(check("0.0.0.0:9464").is_ok());
        assert!(check("localhost:9464").is_ok());
        assert!(check("[::1]:9464").is_ok());
        let refused = check("9464").unwrap_err().to_string();
        assert!(refused.contains("metrics_listen"), "{refused}");
        assert!(check("host:99999").is_err());
        assert!(check("http://127.0.0.1:9464").is_err());
    }

    #[test]
    fn http_urls() {
        assert!(check_http_url("http://{node}:8080/health").is_ok());
        assert!(check_http_url("https://x/").is_ok());
        assert!(check_http_url("https://").is_err());
        assert!(check_http_url("http:///path").is_err());
        assert!(check_http_url("ftp://x").is_err());
    }
}
