//! Classic pcap files read without libpcap, for offline replay.
//!
//! libpcap reads a savefile through stdio: two `fread`s per packet, each copying out of stdio's
//! buffer into libpcap's — about 15 % of a replay's instructions. This reader pulls the file in
//! large blocks into one buffer and hands out packets as slices of it, so the kernel's copy is
//! the only one. (No `mmap`: mapping needs `unsafe`, and a file truncated under the mapping
//! kills the process with SIGBUS instead of giving an error.)
//!
//! It reads what libpcap would, the same way: version 2.4 files with Ethernet frames, either
//! byte order, microsecond or nanosecond timestamps. [`PcapFile::open`] refuses anything else
//! ([`PcapFileError::Unsupported`]: pcapng, older versions, other link types, …) and the caller
//! falls back to libpcap. Packet records follow libpcap's rules: a captured length above the
//! file's snap length is cut to the snap length (libpcap does the same), one above 262,144
//! bytes is an error, and a record cut short by the end of the file is an error naming the
//! record and its offset.

use std::io::{self, Read};

/// Largest captured length libpcap accepts for an Ethernet record (`max_snaplen_for_dlt`).
pub const MAX_CAPLEN: u32 = 262_144;
const FILE_HEADER_LEN: usize = 24;
const RECORD_HEADER_LEN: usize = 16;
/// The read buffer; always larger than one record (header + [`MAX_CAPLEN`]).
const BUFFER_LEN: usize = 1 << 20;
const DLT_EN10MB: u32 = 1;

/// Why a file cannot be read (or is not one this reader handles).
#[derive(Debug, thiserror::Error)]
pub enum PcapFileError {
    /// Not a file this reader handles; libpcap may still read it.
    #[error("not a pcap 2.4 Ethernet file: {0}")]
    Unsupported(String),
    /// The operating system refused a read.
    #[error("read error at byte {offset}: {source}")]
    Io {
        /// Offset in the file of the first byte not read.
        offset: u64,
        /// The error.
        source: io::Error,
    },
    /// The file ends inside a record header.
    #[error(
        "truncated record header: packet {packet} at byte {offset} has {got} of 16 header bytes"
    )]
    TruncatedHeader {
        /// 1-based packet number.
        packet: u64,
        /// Offset of the record header.
        offset: u64,
        /// Bytes present.
        got: usize,
    },
    /// The file ends inside a record's captured bytes.
    #[error(
        "truncated record: packet {packet} at byte {offset} needs {caplen} captured bytes, \
         the file has {got}"
    )]
    TruncatedData {
        /// 1-based packet number.
        packet: u64,
        /// Offset of the record header.
        offset: u64,
        /// Captured length the header claims.
        caplen: u32,
        /// Bytes present.
        got: usize,
    },
    /// A record claims more captured bytes than any capture holds.
    #[error(
        "invalid record: packet {packet} at byte {offset} claims {caplen} captured bytes, \
         more than the maximum of {MAX_CAPLEN}"
    )]
    CaplenTooLarge {
        /// 1-based packet number.
        packet: u64,
        /// Offset of the record header.
        offset: u64,
        /// Captured length the header claims.
        caplen: u32,
    },
}

/// One packet record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// Capture time in nanoseconds since the epoch, computed as libpcap 1.10 does (seconds and
    /// fraction are 32-bit fields, signed unless byte-swapped, the fraction not range-checked;
    /// microseconds are scaled to nanoseconds).
    pub ts: i64,
    /// Length on the wire.
    pub wire_len: u32,
    /// Captured bytes (at most the snap length).
    pub data: &'a [u8],
}

/// A classic pcap file being read.
#[derive(Debug)]
pub struct PcapFile<R> {
    input: R,
    buf: Vec<u8>,
    /// Unconsumed bytes are `buf[start..end]`.
    start: usize,
    end: usize,
    /// File offset of `buf[start]`.
    offset: u64,
    big_endian: bool,
    nanos: bool,
    snaplen: u32,
    packets: u64,
}

impl<R: Read> PcapFile<R> {
    /// Reads the file header. [`PcapFileError::Unsupported`] means "let libpcap try".
    pub fn open(mut input: R) -> Result<Self, PcapFileError> {
        let mut header = [0u8; FILE_HEADER_LEN];
        let mut got = 0;
        while got < FILE_HEADER_LEN {
            match input.read(&mut header[got..]) {
                Ok(0) => {
                    return Err(PcapFileError::Unsupported(format!(
                        "file header is {got} bytes, expected {FILE_HEADER_LEN}"
                    )))
                }
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(PcapFileError::Io {
                        offset: got as u64,
                        source,
                    })
                }
            }
        }
        let magic = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let (big_endian, nanos) = match magic {
            0xa1b2_c3d4 => (false, false),
            0xa1b2_3c4d => (false, true),
            0xd4c3_b2a1 => (true, false),
            0x4d3c_b2a1 => (true, true),
            _ => {
                return Err(PcapFileError::Unsupported(format!(
                    "magic {magic:#010x} (pcapng and other formats go to libpcap)"
                )))
            }
        };
        let u16_at = |at: usize| {
            let b = [header[at], header[at + 1]];
            if big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        };
        let u32_at = |at: usize| field(&header, at, big_endian);
        let (major, minor) = (u16_at(4), u16_at(6));
        if (major, minor) != (2, 4) {
            return Err(PcapFileError::Unsupported(format!(
                "version {major}.{minor}"
            )));
        }
        let linktype = u32_at(20);
        if linktype != DLT_EN10MB {
            return Err(PcapFileError::Unsupported(format!("link type {linktype}")));
        }
        // libpcap's pcap_adjust_snapshot.
        let snaplen = match u32_at(16) {
            0 => MAX_CAPLEN,
            s => s.min(MAX_CAPLEN),
        };
        Ok(PcapFile {
            input,
            buf: vec![0; BUFFER_LEN],
            start: 0,
            end: 0,
            offset: FILE_HEADER_LEN as u64,
            big_endian,
            nanos,
            snaplen,
            packets: 0,
        })
    }

    /// The DLT link type of the packets (always Ethernet).
    pub fn linktype(&self) -> i32 {
        DLT_EN10MB as i32
    }

    /// The next packet, or `None` at the end of the file.
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, PcapFileError> {
        let packet = self.packets + 1;
        let offset = self.offset;
        let got = self.fill(RECORD_HEADER_LEN)?;
        if got == 0 {
            return Ok(None);
        }
        if got < RECORD_HEADER_LEN {
            return Err(PcapFileError::TruncatedHeader {
                packet,
                offset,
                got,
            });
        }
        let header = &self.buf[self.start..self.start + RECORD_HEADER_LEN];
        let sec = field(header, 0, self.big_endian);
        let frac = field(header, 4, self.big_endian);
        let caplen = field(header, 8, self.big_endian);
        let wire_len = field(header, 12, self.big_endian);
        if caplen > MAX_CAPLEN {
            return Err(PcapFileError::CaplenTooLarge {
                packet,
                offset,
                caplen,
            });
        }
        // Both at most MAX_CAPLEN, so the record fits the buffer.
        let stored = caplen as usize;
        let got = self.fill(RECORD_HEADER_LEN + stored)?;
        if got < RECORD_HEADER_LEN + stored {
            return Err(PcapFileError::TruncatedData {
                packet,
                offset,
                caplen,
                got: got - RECORD_HEADER_LEN,
            });
        }
        let data_start = self.start + RECORD_HEADER_LEN;
        let kept = stored.min(self.snaplen as usize);
        self.start = data_start + stored;
        self.offset += (RECORD_HEADER_LEN + stored) as u64;
        self.packets = packet;
        // libpcap 1.10 sign-extends the fields of a file in the host's byte order (they are
        // `int32` there) but not those it byte-swaps (`SWAPLONG` gives an unsigned value).
        let swapped = self.big_endian != cfg!(target_endian = "big");
        let (sec, frac) = if swapped {
            (i64::from(sec), i64::from(frac))
        } else {
            (i64::from(sec as i32), i64::from(frac as i32))
        };
        let frac = if self.nanos { frac } else { frac * 1000 };
        Ok(Some(Record {
            ts: sec.saturating_mul(1_000_000_000).saturating_add(frac),
            wire_len,
            data: &self.buf[data_start..data_start + kept],
        }))
    }

    /// Makes at least `need` unconsumed bytes available unless the file ends first; returns
    /// how many are available (≥ `need`, or all that is left).
    #[inline]
    fn fill(&mut self, need: usize) -> Result<usize, PcapFileError> {
        if self.end - self.start >= need {
            return Ok(self.end - self.start);
        }
        self.refill(need)
    }

    /// [`PcapFile::fill`] when the buffer runs short: moves the unconsumed tail to the front and
    /// reads behind it.
    #[cold]
    fn refill(&mut self, need: usize) -> Result<usize, PcapFileError> {
        self.buf.copy_within(self.start..self.end, 0);
        self.end -= self.start;
        self.start = 0;
        while self.end < need {
            match self.input.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(PcapFileError::Io {
                        offset: self.offset + self.end as u64,
                        source,
                    })
                }
            }
        }
        Ok(self.end)
    }
}

/// The 32-bit field at `at` of a header at least `at + 4` bytes long.
fn field(header: &[u8], at: usize, big_endian: bool) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&header[at..at + 4]);
    if big_endian {
        u32::from_be_bytes(b)
    } else {
        u32::from_le_bytes(b)
    }
}

/// Entry point for the `pcap_file` fuzz target: arbitrary bytes must not panic.
#[doc(hidden)]
pub mod fuzzing {
    use super::PcapFile;

    /// Reads `data` as a pcap file to the end or the first error.
    pub fn pcap_file(data: &[u8]) {
        let Ok(mut file) = PcapFile::open(data) else {
            return;
        };
        let mut bytes = 0usize;
        while let Ok(Some(record)) = file.next_record() {
            bytes += record.data.len();
        }
        let _ = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::{Next, Source};

    /// One record as written: seconds, fraction, captured length (as claimed), wire length and
    /// the bytes actually stored.
    struct Rec {
        sec: i32,
        frac: i32,
        caplen: u32,
        len: u32,
        data: Vec<u8>,
    }

    fn rec(sec: i32, frac: i32, data: &[u8]) -> Rec {
        Rec {
            sec,
            frac,
            caplen: data.len() as u32,
            len: data.len() as u32 + 7,
            data: data.to_vec(),
        }
    }

    fn header(
        big_endian: bool,
        nanos: bool,
        version: (u16, u16),
        snaplen: u32,
        link: u32,
    ) -> Vec<u8> {
        let magic: u32 = if nanos { 0xa1b2_3c4d } else { 0xa1b2_c3d4 };
        let mut v = Vec::new();
        let mut put = |b: &[u8]| v.extend_from_slice(b);
        if big_endian {
            put(&magic.to_be_bytes());
            put(&version.0.to_be_bytes());
            put(&version.1.to_be_bytes());
            put(&[0; 8]);
            put(&snaplen.to_be_bytes());
            put(&link.to_be_bytes());
        } else {
            put(&magic.to_le_bytes());
            put(&version.0.to_le_bytes());
            put(&version.1.to_le_bytes());
            put(&[0; 8]);
            put(&snaplen.to_le_bytes());
            put(&link.to_le_bytes());
        }
        v
    }

    fn file(big_endian: bool, nanos: bool, snaplen: u32, recs: &[Rec]) -> Vec<u8> {
        let mut v = header(big_endian, nanos, (2, 4), snaplen, 1);
        for r in recs {
            for x in [r.sec as u32, r.frac as u32, r.caplen, r.len] {
                v.extend_from_slice(&if big_endian {
                    x.to_be_bytes()
                } else {
                    x.to_le_bytes()
                });
            }
            v.extend_from_slice(&r.data);
        }
        v
    }

    /// Packets as (ts, wire_len, data), and whether reading ended in an error.
    type Read = (Vec<(i64, u32, Vec<u8>)>, Option<String>);

    fn read_ours(bytes: &[u8]) -> Result<Read, PcapFileError> {
        let mut f = PcapFile::open(bytes)?;
        let mut v = Vec::new();
        loop {
            match f.next_record() {
                Ok(Some(r)) => v.push((r.ts, r.wire_len, r.data.to_vec())),
                Ok(None) => return Ok((v, None)),
                Err(e) => return Ok((v, Some(e.to_string()))),
            }
        }
    }

    fn read_libpcap(bytes: &[u8]) -> Read {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.pcap");
        std::fs::write(&path, bytes).unwrap();
        let mut src = Source::file_with_libpcap(&path, "").unwrap();
        let mut v = Vec::new();
        loop {
            match src.next_packet() {
                Ok(Next::Packet(p)) => v.push((p.ts, p.wire_len, p.data.to_vec())),
                Ok(Next::End) => return (v, None),
                Ok(Next::Idle) => unreachable!("files do not idle"),
                Err(e) => return (v, Some(e.to_string())),
            }
        }
    }

    /// Same packets as libpcap, and an error exactly when libpcap has one.
    fn assert_same_as_libpcap(bytes: &[u8]) -> Read {
        let ours = read_ours(bytes).unwrap();
        let theirs = read_libpcap(bytes);
        assert_eq!(
            ours.0.len(),
            theirs.0.len(),
            "{:?} vs {:?}",
            ours.1,
            theirs.1
        );
        for (i, (a, b)) in ours.0.iter().zip(&theirs.0).enumerate() {
            assert_eq!((i, a.0, a.1), (i, b.0, b.1), "timestamp and length");
            assert!(a.2 == b.2, "packet {i}: data differs");
        }
        assert_eq!(
            ours.1.is_some(),
            theirs.1.is_some(),
            "{:?} vs {:?}",
            ours.1,
            theirs.1
        );
        ours
    }

    fn varied_records() -> Vec<Rec> {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut v = vec![
            rec(1_700_000_000, 123_456, b"\x01\x02\x03"),
            rec(0, 0, b""),
            // Negative in the host's byte order, huge when swapped (as libpcap reads them), and
            // fractions are not range-checked.
            rec(-5, -1, b"neg"),
            rec(i32::MAX, i32::MAX, b"max"),
            rec(i32::MIN, 999_999_999, b"min"),
        ];
        for _ in 0..200 {
            let n = rng.usize(0..1600);
            let data: Vec<u8> = (0..n).map(|_| rng.u8(..)).collect();
            v.push(rec(rng.i32(..), rng.i32(0..1_000_000_000), &data));
        }
        v
    }

    #[test]
    fn reads_what_libpcap_reads_in_both_byte_orders_and_precisions() {
        for big_endian in [false, true] {
            for nanos in [false, true] {
                let bytes = file(big_endian, nanos, 65_535, &varied_records());
                let (packets, err) = assert_same_as_libpcap(&bytes);
                assert_eq!(packets.len(), varied_records().len());
                assert_eq!(err, None);
            }
        }
    }

    #[test]
    fn caplen_above_snaplen_is_cut_like_libpcap_does() {
        for snaplen in [100, 0, 1_000_000] {
            let mut r = rec(1, 2, &[0xab; 3000]);
            r.len = 3000;
            let bytes = file(false, true, snaplen, &[r, rec(3, 4, b"after")]);
            let (packets, err) = assert_same_as_libpcap(&bytes);
            assert_eq!(err, None);
            let kept = if snaplen == 100 { 100 } else { 3000 };
            assert_eq!(packets[0].2.len(), kept);
            assert_eq!(packets[1].2, b"after");
        }
    }

    #[test]
    fn malformed_records_are_errors_naming_the_packet_and_offset() {
        let good = file(false, false, 65_535, &[rec(1, 2, b"abcd")]);
        // 24 + 16 + 4 = 44 bytes; the second record starts at byte 44.
        let cut_header = [&good[..], &[1, 2, 3]].concat();
        let (packets, err) = assert_same_as_libpcap(&cut_header);
        assert_eq!(packets.len(), 1);
        let err = err.unwrap();
        assert!(
            err.contains("packet 2 at byte 44") && err.contains("3 of 16"),
            "{err}"
        );

        let mut cut_data = file(
            false,
            false,
            65_535,
            &[rec(1, 2, b"abcd"), rec(3, 4, b"efgh")],
        );
        cut_data.truncate(cut_data.len() - 1);
        let (packets, err) = assert_same_as_libpcap(&cut_data);
        assert_eq!(packets.len(), 1);
        let err = err.unwrap();
        assert!(
            err.contains("packet 2 at byte 44") && err.contains("needs 4"),
            "{err}"
        );

        let mut huge = rec(1, 2, b"");
        huge.caplen = MAX_CAPLEN + 1;
        let bytes = file(true, false, 65_535, &[rec(0, 0, b"x"), huge]);
        let (packets, err) = assert_same_as_libpcap(&bytes);
        assert_eq!(packets.len(), 1);
        let err = err.unwrap();
        assert!(
            err.contains("packet 2 at byte 41") && err.contains("262145"),
            "{err}"
        );
    }

    #[test]
    fn other_formats_are_left_to_libpcap() {
        let unsupported =
            |bytes: &[u8]| matches!(PcapFile::open(bytes), Err(PcapFileError::Unsupported(_)));
        assert!(unsupported(b""));
        assert!(unsupported(&header(false, false, (2, 4), 65_535, 1)[..23]));
        // pcapng's section header block.
        assert!(unsupported(&[0x0a, 0x0d, 0x0d, 0x0a, 0x1c, 0, 0, 0]));
        assert!(unsupported(&header(false, false, (2, 3), 65_535, 1)));
        assert!(unsupported(&header(true, true, (2, 4), 65_535, 113)));
        // An FCS-length flag in the link type's upper bits.
        assert!(unsupported(&header(
            false,
            false,
            (2, 4),
            65_535,
            0x1000_0001
        )));

        // Source::file still reads them, through libpcap: a Linux cooked capture.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sll.pcap");
        let mut bytes = header(false, true, (2, 4), 65_535, 113);
        bytes.extend_from_slice(&file(false, true, 0, &[rec(9, 8, &[0; 20])])[24..]);
        std::fs::write(&path, &bytes).unwrap();
        let mut src = Source::file(&path, "").unwrap();
        assert_eq!(src.linktype(), 113);
        assert!(matches!(src.next_packet().unwrap(), Next::Packet(p) if p.ts == 9_000_000_008));
    }

    /// A reader that hands out a few bytes per call, to exercise every refill boundary.
    struct Trickle<'a>(&'a [u8], usize);

    impl io::Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.1 = self.1 % 7 + 1;
            let n = self.1.min(buf.len()).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn short_reads_and_records_across_buffer_refills_give_the_same_packets() {
        // More than one buffer's worth, so records straddle refills.
        let mut recs = varied_records();
        for i in 0..20 {
            recs.push(rec(i, 0, &vec![i as u8; 60_000 + i as usize]));
        }
        let bytes = file(false, true, 0, &recs);
        assert!(bytes.len() > BUFFER_LEN + BUFFER_LEN / 4);
        let whole = assert_same_as_libpcap(&bytes);
        let mut f = PcapFile::open(Trickle(&bytes, 0)).unwrap();
        let mut trickled = Vec::new();
        while let Some(r) = f.next_record().unwrap() {
            trickled.push((r.ts, r.wire_len, r.data.to_vec()));
        }
        assert_eq!(trickled, whole.0);
    }

    #[test]
    fn public_sample_captures_read_the_same_as_with_libpcap() {
        let dir = std::path::Path::new("/usr/share/doc/python3-dpkt/examples/data");
        let Ok(entries) = std::fs::read_dir(dir) else {
            eprintln!("python3-dpkt not installed; skipping");
            return;
        };
        let mut read = 0;
        for entry in entries {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "pcap") {
                let bytes = std::fs::read(&path).unwrap();
                if PcapFile::open(&bytes[..]).is_ok() {
                    assert_same_as_libpcap(&bytes);
                    read += 1;
                }
            }
        }
        assert!(read > 0);
    }

    #[test]
    fn fuzz_entry_point_survives_mangled_files() {
        let base = file(true, false, 65_535, &varied_records()[..20]);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..2000 {
            let mut bytes = base.clone();
            for _ in 0..rng.usize(1..8) {
                let at = rng.usize(..bytes.len());
                bytes[at] = rng.u8(..);
            }
            bytes.truncate(rng.usize(..=bytes.len()));
            fuzzing::pcap_file(&bytes);
        }
    }
}
