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
}
