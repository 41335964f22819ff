//! The collector's integration tests share this: a dev PKI, the real server in this process on
//! a free 127.0.0.1 port with real mTLS, and clients by certificate name.

#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::Method;
use palisade_collector::config::CollectorConfig;
use palisade_collector::pki::Pki;
use palisade_wire::client::Client;
use palisade_wire::tls::{self, TlsFiles};

/// A running collector; `stop` shuts it down and waits for it.
pub struct Server {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The PKI directory (ca.crt, one certificate per admin role, whatever was issued).
    pub pki_dir: PathBuf,
    /// The loaded config (data_dir resolved).
    pub config: CollectorConfig,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), palisade_collector::server::ServeError>>>,
}

/// `pki init` in `<dir>/pki` (the three admin roles).
pub fn pki(dir: &Path) -> Pki {
    let pki = Pki::new(dir.join("pki"));
    pki.init(&[], 30).unwrap();
    pki
}

/// Writes `<dir>/collector.toml` (listen on a free port, data in `<dir>/data`, TLS from
/// `<dir>/pki`, then `extra` sections), starts the server and waits until it answers.
pub async fn start(dir: &Path, extra: &str) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("collector.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\n[tls]\nca = \"pki/ca.crt\"\ncert = \"pki/palisade-collector.crt\"\nkey = \"pki/palisade-collector.key\"\ncrl = \"pki/crl.pem\"\n{extra}"
        ),
    )
    .unwrap();
    let config = CollectorConfig::load(&path).unwrap();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(palisade_collector::server::serve(config.clone(), async {
        let _ = stop_rx.await;
    }));
    let pki_dir = dir.join("pki");
    let mut probe = client(&pki_dir, "security-admin", port);
    let deadline = Instant::now() + Duration::from_secs(20);
    while probe
        .request(Method::GET, "/v1/status", "application/json", Bytes::new())
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "collector did not come up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Server {
        port,
        pki_dir,
        config,
        stop: Some(stop),
        task: Some(task),
    }
}

impl Server {
    /// A client with `<name>.crt/.key` from the PKI directory.
    pub fn client(&self, name: &str) -> Client {
        client(&self.pki_dir, name, self.port)
    }

    /// Shuts the server down cleanly (bounded wait).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), t)
                .await
                .unwrap()
                .unwrap()
                .unwrap();
        }
    }
}

/// A client for `https://127.0.0.1:<port>` with `<name>.crt/.key` from `pki`.
pub fn client(pki: &Path, name: &str, port: u16) -> Client {
    let files = TlsFiles {
        ca: pki.join("ca.crt"),
        cert: pki.join(format!("{name}.crt")),
        key: pki.join(format!("{name}.key")),
    };
    Client::new(
        &format!("https://127.0.0.1:{port}"),
        tls::client_config(&files).unwrap(),
        Duration::from_secs(10),
    )
    .unwrap()
}
