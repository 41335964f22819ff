//! Byte layouts of pack and index files, and their bounded parsers (fuzzed: these bytes come from
//! disk and from peers).
//!
//! ```text
//! pack  = "PLPK" 0x01 blob*
//! blob  = id[32] flags[1] raw_len:u32le stored_len:u32le blob_hash[32] stored[stored_len]
//! index = "PLIX" 0x01 pack_id[32] pack_len:u64le count:u32le entry*count blake3(all before)[32]
//! entry = id[32] flags[1] raw_len:u32le stored_len:u32le offset:u64le blob_hash[32]
//! ```
//! `blob_hash` is plain blake3 of the stored bytes (after compression and encryption), so a
//! repository that cannot decrypt still verifies every byte it holds. A pack's id is blake3 of the
//! whole pack file, so packs are self-describing and an index can be rebuilt from its pack.

use crate::chunk::Id;
use crate::error::{Error, Result};

/// Pack file magic and version.
pub const PACK_MAGIC: &[u8; 5] = b"PLPK\x01";
/// Index file magic and version.
pub const INDEX_MAGIC: &[u8; 5] = b"PLIX\x01";
/// Bytes of a blob header inside a pack.
pub const BLOB_HEADER_LEN: usize = 32 + 1 + 4 + 4 + 32;
const INDEX_ENTRY_LEN: usize = 32 + 1 + 4 + 4 + 8 + 32;
/// No blob is larger than this (a chunk is at most 16 MiB; trees are split well below).
pub const MAX_BLOB_BYTES: u32 = 64 << 20;

/// The stored bytes are zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// The stored bytes are XChaCha20-Poly1305 sealed (nonce first).
pub const FLAG_SEALED: u8 = 2;
/// The blob is a tree (directory listing), not file data.
pub const FLAG_TREE: u8 = 4;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_SEALED | FLAG_TREE;

/// One blob's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// Keyed blake3 of the plaintext.
    pub id: Id,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Plaintext length.
    pub raw_len: u32,
    /// Stored length.
    pub stored_len: u32,
    /// blake3 of the stored bytes.
    pub blob_hash: [u8; 32],
}

impl BlobHeader {
    /// The header's bytes.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id.0);
        out.push(self.flags);
        out.extend_from_slice(&self.raw_len.to_le_bytes());
        out.extend_from_slice(&self.stored_len.to_le_bytes());
        out.extend_from_slice(&self.blob_hash);
    }

    /// Parses a header; `at` names the place for errors.
    pub fn decode(b: &[u8], at: &str) -> Result<BlobHeader> {
        let mut r = Reader {
            b,
            pos: 0,
            what: at,
        };
        let h = BlobHeader {
            id: Id(r.array()?),
            flags: r.u8()?,
            raw_len: r.u32()?,
            stored_len: r.u32()?,
            blob_hash: r.array()?,
        };
        h.check(at)?;
        Ok(h)
    }

    fn check(&self, at: &str) -> Result<()> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(
                at,
                format!("unknown blob flags {:#x}", self.flags),
            ));
        }
        if self.raw_len > MAX_BLOB_BYTES || self.stored_len > MAX_BLOB_BYTES + 64 {
            return Err(Error::corrupt(
                at,
                format!(
                    "blob {} claims {} raw / {} stored bytes, over the {MAX_BLOB_BYTES}-byte limit",
                    self.id.short(),
                    self.raw_len,
                    self.stored_len
                ),
            ));
        }
        Ok(())
    }
}

/// A blob's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The header.
    pub header: BlobHeader,
    /// Offset of the stored bytes in the pack.
    pub offset: u64,
}

/// Walks a whole pack file and returns its entries, checking every blob hash.
pub fn parse_pack(bytes: &[u8], name: &str) -> Result<Vec<Entry>> {
    if bytes.get(..PACK_MAGIC.len()) != Some(PACK_MAGIC.as_slice()) {
        return Err(Error::corrupt(
            format!("pack {name}"),
            "bad magic or version",
        ));
    }
    let mut pos = PACK_MAGIC.len();
    let mut out = Vec::new();
    while pos < bytes.len() {
        let at = format!("pack {name} at offset {pos}");
        let hb = bytes.get(pos..pos + BLOB_HEADER_LEN).ok_or_else(|| {
            Error::corrupt(
                &at,
                format!("truncated blob header ({} bytes left)", bytes.len() - pos),
            )
        })?;
        let header = BlobHeader::decode(hb, &at)?;
        let start = pos + BLOB_HEADER_LEN;
        let end = start + header.stored_len as usize;
        let stored = bytes.get(start..end).ok_or_else(|| {
            Error::corrupt(
                &at,
                format!(
                    "blob {} needs {} bytes, {} left",
                    header.id.short(),
                    header.stored_len,
                    bytes.len() - start
                ),
            )
        })?;
        if blake3::hash(stored).as_bytes() != &header.blob_hash {
            return Err(Error::corrupt(
                &at,
                format!("blob {} does not match its hash", header.id.short()),
            ));
        }
        out.push(Entry {
            header,
            offset: start as u64,
        });
        pos = end;
    }
    Ok(out)
}

/// An index file's content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IndexFile {
    /// blake3 of the pack file.
    pub pack_id: [u8; 32],
    /// The pack's length in bytes.
    pub pack_len: u64,
    /// Its blobs.
    pub entries: Vec<Entry>,
}

impl IndexFile {
    /// The file's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(5 + 44 + self.entries.len() * INDEX_ENTRY_LEN + 32);
        out.extend_from_slice(INDEX_MAGIC);
        out.extend_from_slice(&self.pack_id);
        out.extend_from_slice(&self.pack_len.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            out.extend_from_slice(&e.header.id.0);
            out.push(e.header.flags);
            out.extend_from_slice(&e.header.raw_len.to_le_bytes());
            out.extend_from_slice(&e.header.stored_len.to_le_bytes());
            out.extend_from_slice(&e.offset.to_le_bytes());
            out.extend_from_slice(&e.header.blob_hash);
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and checks an index file: checksum, counts, and every entry inside the pack.
    pub fn decode(b: &[u8], name: &str) -> Result<IndexFile> {
        let what = format!("index {name}");
        if b.len() < 5 + 44 + 32 || &b[..5] != INDEX_MAGIC {
            return Err(Error::corrupt(&what, "bad magic, version or length"));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(Error::corrupt(&what, "checksum mismatch"));
        }
        let mut r = Reader {
            b: &body[5..],
            pos: 0,
            what: &what,
        };
        let pack_id = r.array()?;
        let pack_len = r.u64()?;
        let count = r.u32()? as usize;
        if r.b.len() - r.pos != count * INDEX_ENTRY_LEN {
            return Err(Error::corrupt(
                &what,
                format!(
                    "{count} entries declared, {} bytes of entries",
                    r.b.len() - r.pos
                ),
            ));
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count {
            let header = BlobHeader {
                id: Id(r.array()?),
                flags: r.u8()?,
                raw_len: r.u32()?,
                stored_len: r.u32()?,
                blob_hash: [0; 32],
            };
            let offset = r.u64()?;
            let header = BlobHeader {
                blob_hash: r.array()?,
                ..header
            };
            header.check(&format!("{what} entry {i}"))?;
            if offset
                .checked_add(u64::from(header.stored_len))
                .is_none_or(|end| end > pack_len)
            {
                return Err(Error::corrupt(
                    &what,
                    format!("entry {i} lies outside the {pack_len}-byte pack"),
                ));
            }
            entries.push(Entry { header, offset });
        }
        Ok(IndexFile {
            pack_id,
            pack_len,
            entries,
        })
    }
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'a str,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        let s = self.b.get(self.pos..self.pos + n).ok_or_else(|| {
            Error::corrupt(
                self.what,
                format!("truncated at byte {} (needs {n})", self.pos),
            )
        })?;
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack_with(blobs: &[&[u8]]) -> (Vec<u8>, Vec<Entry>) {
        let mut out = PACK_MAGIC.to_vec();
        let mut entries = Vec::new();
        for (i, b) in blobs.iter().enumerate() {
            let header = BlobHeader {
                id: Id([i as u8; 32]),
                flags: 0,
                raw_len: b.len() as u32,
                stored_len: b.len() as u32,
                blob_hash: *blake3::hash(b).as_bytes(),
            };
            header.encode(&mut out);
            entries.push(Entry {
                header,
                offset: out.len() as u64,
            });
            out.extend_from_slice(b);
        }
        (out, entries)
    }

    #[test]
    fn packs_and_indexes_round_trip() {
        let (pack, entries) = pack_with(&[b"one", b"", b"three"]);
        assert_eq!(parse_pack(&pack, "p").unwrap(), entries);
        let idx = IndexFile {
            pack_id: *blake3::hash(&pack).as_bytes(),
            pack_len: pack.len() as u64,
            entries,
        };
        assert_eq!(IndexFile::decode(&idx.encode(), "i").unwrap(), idx);
    }

    #[test]
    fn damage_is_named() {
        let (mut pack, entries) = pack_with(&[b"hello world"]);
        let at = entries[0].offset as usize;
        pack[at] ^= 1;
        let e = parse_pack(&pack, "p1").unwrap_err().to_string();
        assert!(e.contains("does not match its hash"), "{e}");
        let e = parse_pack(&pack[..pack.len() - 2], "p1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs 11 bytes"), "{e}");
        let idx = IndexFile {
            pack_id: [0; 32],
            pack_len: 3,
            entries,
        };
        let e = IndexFile::decode(&idx.encode(), "i1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("outside the 3-byte pack"), "{e}");
        let mut bytes = idx.encode();
        bytes[10] ^= 1;
        assert!(IndexFile::decode(&bytes, "i1")
            .unwrap_err()
            .to_string()
            .contains("checksum"));
    }
}
