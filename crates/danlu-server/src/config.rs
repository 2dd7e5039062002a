//! How the server is started: root, address, authentication and limits, and the rule that
//! keeps a server without credentials off the network.

use crate::{Error, Result};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

/// The default port, A1111's (`modules/cmd_args.py` `--port`).
pub const DEFAULT_PORT: u16 = 7860;

/// The default request body limit: 64 MiB, enough for a few 2048x2048 PNGs in base64.
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// One `user:password` pair of `--api-auth`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The password never reaches a log line.
        f.debug_struct("Credential")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Parses `--api-auth`: `user:pass[,user2:pass2]` (A1111 `modules/api/api.py`: pairs split on
/// `,`, each on its first `:`).
///
/// # Errors
/// [`Error::Auth`] when a pair has no `:` or an empty user name.
pub fn parse_api_auth(text: &str) -> Result<Vec<Credential>> {
    text.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| match pair.split_once(':') {
            Some((user, password)) if !user.is_empty() => Ok(Credential {
                user: user.to_owned(),
                password: password.to_owned(),
            }),
            _ => Err(Error::Auth {
                reason: "each pair must be `user:password` with a non-empty user".to_owned(),
            }),
        })
        .collect()
}

/// Everything `danlu serve` passes to the server.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The library root (created in A1111 layout when missing).
    pub root: PathBuf,
    /// The address to bind without `--listen` (loopback by default).
    pub host: IpAddr,
    /// The port (0 picks a free one).
    pub port: u16,
    /// `--listen`: bind every interface.
    pub listen: bool,
    /// `--insecure`: allow a network-facing server without credentials.
    pub insecure: bool,
    /// `--api-auth` credentials; empty means no authentication.
    pub auth: Vec<Credential>,
    /// The largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Hash the library's files in the background after startup and after each refresh (on
    /// by default); a checkpoint is hashed when it is loaded either way.
    pub hash_in_background: bool,
    /// Where the networks run (`--device`).
    pub device: danlu_generate::DeviceChoice,
    /// Compute precision (`--precision`; `None`: the device's default).
    pub dtype: Option<candle_core::DType>,
}

impl ServerConfig {
    /// Loopback on A1111's port, no authentication, the default body limit.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: DEFAULT_PORT,
            listen: false,
            insecure: false,
            auth: Vec::new(),
            body_limit: DEFAULT_BODY_LIMIT,
            hash_in_background: true,
            device: danlu_generate::DeviceChoice::Auto,
            dtype: None,
        }
    }

    /// The address to bind: every interface under `--listen`, else `host`.
    ///
    /// # Errors
    /// [`Error::ListenWithoutAuth`] when the address is reachable from the network (`--listen`
    /// or a non-loopback `--host`) and there are no credentials, unless `--insecure`.
    pub fn bind_addr(&self) -> Result<SocketAddr> {
        let ip = if self.listen {
            IpAddr::V4(Ipv4Addr::UNSPECIFIED)
        } else {
            self.host
        };
        if !ip.is_loopback() && self.auth.is_empty() && !self.insecure {
            return Err(Error::ListenWithoutAuth { addr: ip });
        }
        Ok(SocketAddr::new(ip, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_auth_pairs_split_on_comma_then_first_colon() {
        let c = parse_api_auth("alice:se:cret,bob:pw").unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].user.as_str(), c[0].password.as_str()),
            ("alice", "se:cret")
        );
        assert_eq!((c[1].user.as_str(), c[1].password.as_str()), ("bob", "pw"));
        assert!(parse_api_auth("nocolon").is_err());
        assert!(parse_api_auth(":pw").is_err());
    }

    #[test]
    fn listen_needs_credentials_or_insecure() {
        let mut c = ServerConfig::new("/r");
        assert!(c.bind_addr().unwrap().ip().is_loopback());
        c.listen = true;
        assert!(matches!(
            c.bind_addr(),
            Err(Error::ListenWithoutAuth { .. })
        ));
        c.host = "0.0.0.0".parse().unwrap();
        c.listen = false;
        assert!(
            c.bind_addr().is_err(),
            "a non-loopback host is the same as --listen"
        );
        c.insecure = true;
        assert!(c.bind_addr().unwrap().ip().is_unspecified());
        c.insecure = false;
        c.auth = parse_api_auth("u:p").unwrap();
        c.listen = true;
        assert!(c.bind_addr().unwrap().ip().is_unspecified());
    }

    #[test]
    fn credential_debug_hides_the_password() {
        let c = parse_api_auth("u:hunter2").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
