//! Writes classic pcap files with nanosecond timestamps (magic `a1b23c4d`, Ethernet link type),
//! for tests and benchmark captures. Readable by tcpdump, tshark and [`super::Source::file`].

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

/// A pcap file being written.
#[derive(Debug)]
pub struct PcapWriter {
    out: BufWriter<File>,
    snaplen: u32,
}

impl PcapWriter {
    /// Creates `path` and writes the global header (snap length 65535, DLT_EN10MB).
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let snaplen = 65_535u32;
        out.write_all(&0xa1b2_3c4du32.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?;
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?;
        out.write_all(&0u32.to_le_bytes())?;
        out.write_all(&snaplen.to_le_bytes())?;
        out.write_all(&1u32.to_le_bytes())?;
        Ok(PcapWriter { out, snaplen })
    }

    /// Appends one frame captured at `ts` (nanoseconds since the epoch).
    pub fn write(&mut self, ts: i64, frame: &[u8]) -> std::io::Result<()> {
        let sec = u32::try_from(ts.div_euclid(1_000_000_000)).unwrap_or(0);
        let nsec = ts.rem_euclid(1_000_000_000) as u32;
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
        let cap = len.min(self.snaplen);
        self.out.write_all(&sec.to_le_bytes())?;
        self.out.write_all(&nsec.to_le_bytes())?;
        self.out.write_all(&cap.to_le_bytes())?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&frame[..cap as usize])
    }

    /// Flushes and closes.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.out.flush()?;
        self.out.get_ref().sync_all()
    }
}
