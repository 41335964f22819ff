//! HTTPS over mutual TLS between replicators. Certificates come from the collector's PKI
//! (`palisade-collector pki issue NAME --role replicator`); a peer whose certificate is not of
//! role `replicator` is refused at the first request.
//!
//! - [`server`]: the accept loop and connection handling every replicator service uses.

pub mod peer;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_wire::client::Client;
use palisade_wire::tls::{self, TlsFiles};

use crate::error::{Error, Result};

/// Where a replicator finds its certificate, key and CA.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The files.
    pub files: TlsFiles,
}

impl PeerTls {
    /// `DIR/ca.crt`, `DIR/NAME.crt`, `DIR/NAME.key`.
    pub fn from_pki_dir(dir: &Path, identity: &str) -> PeerTls {
        PeerTls {
            files: TlsFiles {
                ca: dir.join("ca.crt"),
                cert: dir.join(format!("{identity}.crt")),
                key: dir.join(format!("{identity}.key")),
            },
        }
    }

    /// Explicit files.
    pub fn from_files(ca: PathBuf, cert: PathBuf, key: PathBuf) -> PeerTls {
        PeerTls {
            files: TlsFiles { ca, cert, key },
        }
    }

    /// A client for `url` (`https://host:port`).
    pub fn client(&self, url: &str, timeout: Duration) -> Result<Client> {
        let config = tls::client_config(&self.files).map_err(|e| Error::Usage(e.to_string()))?;
        Client::new(url, config, timeout).map_err(|e| Error::Usage(e.to_string()))
    }

    /// The server side.
    pub fn server_config(&self) -> Result<rustls::ServerConfig> {
        tls::server_config(&self.files, None).map_err(|e| Error::Usage(e.to_string()))
    }
}
