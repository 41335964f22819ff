//! Packet capture: libpcap live capture on an interface ([`Source::live`]) and pcap/pcapng files
//! ([`Source::file`]), both yielding [`RawPacket`]s with nanosecond timestamps from the capture.
//! Classic pcap files without a BPF filter are read by [`pcap_file`] (no libpcap copy), the rest
//! by libpcap. [`writer`] writes pcap files (tests and benchmark data); [`craft`] builds frames
//! for them.

pub mod craft;
pub mod pcap_file;
pub mod writer;

use std::fs::File;
use std::path::Path;

use pcap::{Activated, Capture, Precision};
use serde::Deserialize;

/// `[capture]` in the agent config: live capture settings.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Interface to capture on (`eth0`); empty: no live capture.
    pub interface: String,
    /// BPF filter (tcpdump syntax); empty: everything.
    pub bpf_filter: String,
    /// Bytes captured per packet.
    pub snaplen: u32,
    /// Promiscuous mode (needs CAP_NET_ADMIN besides CAP_NET_RAW).
    pub promiscuous: bool,
    /// Kernel capture buffer in bytes; large enough to ride out bursts.
    pub buffer_bytes: u32,
    /// Deliver packets as they arrive instead of when the buffer fills or the timeout passes.
    pub immediate: bool,
    /// Read timeout in milliseconds: how often the pipeline ticks (expires flows, delivers
    /// finished scans) while the interface is idle.
    pub timeout_ms: u32,
    /// Seconds between capture-statistics checks (received/dropped, reported in heartbeats).
    pub stats_interval_secs: u64,
    /// Packets dropped (kernel + interface) within one stats interval that raise an alert.
    pub drop_alert_threshold: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            interface: String::new(),
            bpf_filter: String::new(),
            snaplen: 65_535,
            promiscuous: true,
            buffer_bytes: 64 << 20,
            immediate: false,
            timeout_ms: 100,
            stats_interval_secs: 10,
            drop_alert_threshold: 1,
        }
    }
}

/// Capture errors, each naming the interface or file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The process lacks the privilege to capture.
    #[error(
        "cannot capture on {interface}: permission denied; run as root or grant CAP_NET_RAW \
         (and CAP_NET_ADMIN for promiscuous mode), e.g. `setcap cap_net_raw,cap_net_admin=eip \
         palisade-agent` ({reason})"
    )]
    Permission {
        /// The interface.
        interface: String,
        /// libpcap's message.
        reason: String,
    },
    /// Opening the interface or file failed.
    #[error("cannot open {what}: {reason}")]
    Open {
        /// Interface or file.
        what: String,
        /// libpcap's message.
        reason: String,
    },
    /// The BPF filter does not compile.
    #[error("invalid BPF filter {filter:?}: {reason}")]
    Filter {
        /// The filter.
        filter: String,
        /// libpcap's message.
        reason: String,
    },
    /// Reading failed mid-capture.
    #[error("capture read error on {what}: {reason}")]
    Read {
        /// Interface or file.
        what: String,
        /// libpcap's message.
        reason: String,
    },
}

/// One captured packet.
#[derive(Debug, Clone, Copy)]
pub struct RawPacket<'a> {
    /// Capture time, nanoseconds since the epoch.
    pub ts: i64,
    /// Length on the wire (may exceed `data.len()` when truncated by the snap length).
    pub wire_len: u32,
    /// The captured bytes.
    pub data: &'a [u8],
}

/// What a read produced.
#[derive(Debug)]
pub enum Next<'a> {
    /// A packet.
    Packet(RawPacket<'a>),
    /// Live capture: the read timeout passed with no packet.
    Idle,
    /// File capture: no more packets.
    End,
}

/// Packet counters from libpcap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Packets received by the filter.
    pub received: u64,
    /// Dropped for lack of buffer space (we read too slowly).
    pub dropped: u64,
    /// Dropped by the interface or driver.
    pub if_dropped: u64,
}

enum Handle {
    Live(Capture<pcap::Active>),
    File(Capture<pcap::Offline>),
    PcapFile(pcap_file::PcapFile<File>),
}

/// A live interface or a capture file.
pub struct Source {
    handle: Handle,
    what: String,
    linktype: i32,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("what", &self.what)
            .field("linktype", &self.linktype)
            .finish_non_exhaustive()
    }
}

fn pcap_reason(e: &pcap::Error) -> String {
    e.to_string()
}

fn is_permission(reason: &str) -> bool {
    let r = reason.to_ascii_lowercase();
    r.contains("permission") || r.contains("operation not permitted") || r.contains("eperm")
}

fn apply_filter<T: Activated + ?Sized>(
    cap: &mut Capture<T>,
    filter: &str,
) -> Result<(), CaptureError> {
    if filter.trim().is_empty() {
        return Ok(());
    }
    cap.filter(filter, true).map_err(|e| CaptureError::Filter {
        filter: filter.to_string(),
        reason: pcap_reason(&e),
    })
}

impl Source {
    /// Opens `config.interface` for live capture with the configured snap length, promiscuous
    /// flag, buffer, immediate mode, timeout, nanosecond timestamps and BPF filter.
    pub fn live(config: &CaptureConfig) -> Result<Self, CaptureError> {
        let what = config.interface.clone();
        let open_err = |e: pcap::Error| {
            let reason = pcap_reason(&e);
            if is_permission(&reason) {
                CaptureError::Permission {
                    interface: what.clone(),
                    reason,
                }
            } else {
                CaptureError::Open {
                    what: format!("interface {what}"),
                    reason,
                }
            }
        };
        let cap = Capture::from_device(what.as_str())
            .map_err(open_err)?
            .snaplen(i32::try_from(config.snaplen).unwrap_or(i32::MAX))
            .promisc(config.promiscuous)
            .buffer_size(i32::try_from(config.buffer_bytes).unwrap_or(i32::MAX))
            .immediate_mode(config.immediate)
            .timeout(i32::try_from(config.timeout_ms).unwrap_or(1000))
            .precision(Precision::Nano)
            .open()
            .map_err(open_err)?;
        // Non-blocking reads: libpcap's read timeout does not fire on an idle interface with
        // TPACKET_V3 (the kernel only retires a block once a packet arrives), and the pipeline
        // must still tick when nothing arrives — to expire flows and deliver results of work in
        // flight (YARA scans). The capture loop sleeps briefly when a read finds nothing.
        let mut cap = cap.setnonblock().map_err(open_err)?;
        apply_filter(&mut cap, &config.bpf_filter)?;
        let linktype = cap.get_datalink().0;
        Ok(Source {
            handle: Handle::Live(cap),
            what: format!("interface {what}"),
            linktype,
        })
    }

    /// Opens a pcap or pcapng file, with an optional BPF filter.
    pub fn file(path: &Path, bpf_filter: &str) -> Result<Self, CaptureError> {
        let what = format!("capture file {}", path.display());
        if bpf_filter.trim().is_empty() {
            let file = File::open(path).map_err(|e| CaptureError::Open {
                what: what.clone(),
                reason: e.to_string(),
            })?;
            // Anything the reader does not handle (pcapng, other link types, a bad header)
            // goes to libpcap, which reads it or says why not.
            if let Ok(reader) = pcap_file::PcapFile::open(file) {
                return Ok(Source {
                    linktype: reader.linktype(),
                    handle: Handle::PcapFile(reader),
                    what,
                });
            }
        }
        Self::file_with_libpcap(path, bpf_filter)
    }

    /// Opens a capture file with libpcap.
    fn file_with_libpcap(path: &Path, bpf_filter: &str) -> Result<Self, CaptureError> {
        let what = format!("capture file {}", path.display());
        let mut cap = Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| {
            CaptureError::Open {
                what: what.clone(),
                reason: pcap_reason(&e),
            }
        })?;
        apply_filter(&mut cap, bpf_filter)?;
        let linktype = cap.get_datalink().0;
        Ok(Source {
            handle: Handle::File(cap),
            what,
            linktype,
        })
    }

    /// The DLT link type (1 Ethernet, 113 Linux cooked, 101 raw IP, …).
    pub fn linktype(&self) -> i32 {
        self.linktype
    }

    /// Reads the next packet.
    pub fn next_packet(&mut self) -> Result<Next<'_>, CaptureError> {
        let result = match &mut self.handle {
            Handle::Live(c) => c.next_packet(),
            Handle::File(c) => c.next_packet(),
            Handle::PcapFile(f) => {
                return match f.next_record() {
                    Ok(Some(r)) => Ok(Next::Packet(RawPacket {
                        ts: r.ts,
                        wire_len: r.wire_len,
                        data: r.data,
                    })),
                    Ok(None) => Ok(Next::End),
                    Err(e) => Err(CaptureError::Read {
                        what: self.what.clone(),
                        reason: e.to_string(),
                    }),
                };
            }
        };
        match result {
            Ok(p) => {
                // Opened with nanosecond precision, so `tv_usec` holds nanoseconds.
                let (sec, frac): (i64, i64) = (p.header.ts.tv_sec, p.header.ts.tv_usec);
                Ok(Next::Packet(RawPacket {
                    ts: sec.saturating_mul(1_000_000_000).saturating_add(frac),
                    wire_len: p.header.len,
                    data: p.data,
                }))
            }
            Err(pcap::Error::TimeoutExpired) => Ok(Next::Idle),
            Err(pcap::Error::NoMorePackets) => Ok(Next::End),
            Err(e) => Err(CaptureError::Read {
                what: self.what.clone(),
                reason: pcap_reason(&e),
            }),
        }
    }

    /// libpcap's counters (live capture only).
    pub fn stats(&mut self) -> Option<CaptureStats> {
        match &mut self.handle {
            Handle::Live(c) => c.stats().ok().map(|s| CaptureStats {
                received: u64::from(s.received),
                dropped: u64::from(s.dropped),
                if_dropped: u64::from(s.if_dropped),
            }),
            Handle::File(_) | Handle::PcapFile(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn reads_back_what_the_writer_wrote_with_nanosecond_timestamps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        let frame = craft::tcp(
            craft::Endpoint::new(Ipv4Addr::new(10, 0, 0, 1), 40000),
            craft::Endpoint::new(Ipv4Addr::new(10, 0, 0, 2), 80),
            craft::SYN,
            1,
            0,
            b"",
        );
        let mut w = writer::PcapWriter::create(&path).unwrap();
        w.write(1_700_000_000_123_456_789, &frame).unwrap();
        w.write(1_700_000_001_000_000_001, &frame).unwrap();
        w.finish().unwrap();
        let mut src = Source::file(&path, "").unwrap();
        assert_eq!(src.linktype(), 1);
        let mut ts = Vec::new();
        while let Next::Packet(p) = src.next_packet().unwrap() {
            assert_eq!(p.data, &frame[..]);
            assert_eq!(p.wire_len as usize, frame.len());
            ts.push(p.ts);
        }
        assert_eq!(
            ts,
            vec![1_700_000_000_123_456_789, 1_700_000_001_000_000_001]
        );
        // A BPF filter applies to files too.
        let mut src = Source::file(&path, "udp").unwrap();
        assert!(matches!(src.next_packet().unwrap(), Next::End));
    }

    #[test]
    fn bad_inputs_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pcap");
        let e = Source::file(&missing, "").unwrap_err().to_string();
        assert!(e.contains("nope.pcap"), "{e}");
        let junk = dir.path().join("junk.pcap");
        std::fs::write(&junk, b"this is not a capture").unwrap();
        let e = Source::file(&junk, "").unwrap_err().to_string();
        assert!(e.contains("junk.pcap"), "{e}");
        let path = dir.path().join("ok.pcap");
        writer::PcapWriter::create(&path).unwrap().finish().unwrap();
        let e = Source::file(&path, "tcp port banana")
            .unwrap_err()
            .to_string();
        assert!(e.contains("invalid BPF filter"), "{e}");
    }
}
