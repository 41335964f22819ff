//! `palisade-wire`: what every Palisade program shares — the [`event::Event`] schema, the batch
//! framing agents use to ship events ([`batch`]), mutual-TLS configuration and certificate
//! identities ([`tls`]), and a small HTTPS client ([`client`]).

pub mod batch;
pub mod client;
pub mod config;
pub mod event;
pub mod output;
pub mod process;
pub mod server;
pub mod tls;

pub use event::{Event, EventKind, Severity, Timestamp};

/// Entry points for the fuzz targets in `fuzz/`: each takes arbitrary bytes and must not panic.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes an arbitrary frame with default limits.
    pub fn batch_decode(data: &[u8]) {
        let _ = crate::batch::decode(data, &crate::batch::Limits::default());
    }

    /// Parses an arbitrary event line.
    pub fn event_parse(data: &[u8]) {
        if let Ok(e) = serde_json::from_slice::<crate::event::Event>(data) {
            let _ = e.content_id();
        }
    }

    /// Writes `data` to `name` in a directory of this process's own under the temp dir, for
    /// targets whose real entry point reads a file (configs, PEM files). The same path is
    /// rewritten on every input, so nothing accumulates.
    pub fn scratch_file(name: &str, data: &[u8]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("palisade-fuzz-{}", std::process::id()));
        // A failure here is the fuzzing machine's, not the parser's: stop loudly.
        std::fs::create_dir_all(&dir).expect("create the fuzz scratch directory");
        let path = dir.join(name);
        std::fs::write(&path, data).expect("write the fuzz scratch file");
        path
    }

    /// Certificate material as the programs load it: the same bytes as a PEM file of
    /// certificates (each then read for its identity), a private key, and a CRL, all three
    /// combined into a server and a client configuration; and as a raw DER certificate.
    pub fn certificates(data: &[u8]) {
        use crate::tls;
        let _ = tls::identity(&rustls::pki_types::CertificateDer::from(data));
        let path = scratch_file("material.pem", data);
        if let Ok(certs) = tls::load_certs(&path) {
            for cert in &certs {
                let _ = tls::identity(cert);
            }
        }
        let _ = tls::load_key(&path);
        let _ = tls::load_crls(&path);
        let files = tls::TlsFiles {
            ca: path.clone(),
            cert: path.clone(),
            key: path.clone(),
        };
        let _ = tls::server_config(&files, Some(&path));
        let _ = tls::client_config(&files);
    }
}
