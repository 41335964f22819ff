//! HTTPS over mutual TLS between replicators. Certificates come from the collector's PKI
//! (`palisade-collector pki issue NAME --role replicator`); a peer whose certificate is not of
//! role `replicator` is refused at the first request, and one on the PKI's revocation list
//! (`DIR/crl.pem`, written by `pki revoke`) at the handshake: servers re-read the list when it
//! changes, so a revoked site is shut out without a restart.
//!
//! - [`server`]: the accept loop and connection handling every replicator service uses.

pub mod peer;
pub mod server;

use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_wire::client::Client;
use palisade_wire::server::TlsReloader;
use palisade_wire::tls::{self, TlsFiles};

use crate::error::{Error, Result};

/// Where a replicator finds its certificate, key and CA.
#[derive(Clone, Debug)]
pub struct PeerTls {
    /// The files.
    pub files: TlsFiles,
    /// The revocation list servers check client certificates against (may not exist yet).
    pub crl: Option<PathBuf>,
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
            crl: Some(dir.join("crl.pem")),
        }
    }

    /// Explicit files.
    pub fn from_files(ca: PathBuf, cert: PathBuf, key: PathBuf) -> PeerTls {
        PeerTls {
            files: TlsFiles { ca, cert, key },
            crl: None,
        }
    }

    /// A client for `url` (`https://host:port`).
    pub fn client(&self, url: &str, timeout: Duration) -> Result<Client> {
        let config = tls::client_config(&self.files).map_err(|e| Error::Usage(e.to_string()))?;
        Client::new(url, config, timeout).map_err(|e| Error::Usage(e.to_string()))
    }

    /// The server side: client certificates from the CA and not revoked.
    pub fn server(&self) -> Result<std::sync::Arc<TlsReloader>> {
        TlsReloader::new(self.files.clone(), self.crl.clone())
            .map(std::sync::Arc::new)
            .map_err(|e| Error::Usage(e.to_string()))
    }
}
