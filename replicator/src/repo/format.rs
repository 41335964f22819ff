//! Byte layouts of pack and index files, and their bounded parsers (fuzzed: these bytes come from
//! disk and from peers).
//!
//! ```text
//! pack    = "PLPK" 0x02 record*
//! record  = header members? stored[stored_len]
//! header  = id[32] flags[1] raw_len:u32le stored_len:u32le record_hash[32]
//! members = count:u32le (id[32] len:u32le)*count          (only with FLAG_FRAME)
//! index   = "PLIX" 0x02 pack_id[32] pack_len:u64le count:u32le entry*count blake3(all before)[32]
//! entry   = id[32] flags[1] raw_len:u32le stored_len:u32le offset:u64le record_hash[32]
//!           part_off:u32le part_len:u32le members:u32le
//! ```
//! A record is one blob, or a **frame**: several chunks compressed (and sealed) together, so that
//! zstd sees a megabyte of context while deduplication still works on 64 KiB chunks. A frame's
//! header carries its first member's id and the whole frame's plaintext length; its members follow
//! in plaintext order. The index has one entry per chunk: where its record is (`offset` of the
//! stored bytes, `members` to find the record's start) and where the chunk lies in the record's
//! plaintext (`part_off`, `part_len`).
//!
//! `record_hash` is plain blake3 of the member table (when there is one) followed by the stored
//! bytes (after compression and encryption), so a repository that cannot decrypt still verifies
//! every byte it holds. A pack's id is blake3 of the whole pack file, so packs are
//! self-describing and an index can be rebuilt from its pack. Version 1 packs and indexes (no
//! frames, no part fields) are still read.

use crate::chunk::Id;
use crate::error::{Error, Result};

/// Pack file magic and version (written).
pub const PACK_MAGIC: &[u8; 5] = b"PLPK\x02";
const PACK_MAGIC_V1: &[u8; 5] = b"PLPK\x01";
/// Index file magic and version (written).
pub const INDEX_MAGIC: &[u8; 5] = b"PLIX\x02";
const INDEX_MAGIC_V1: &[u8; 5] = b"PLIX\x01";
/// Bytes of a record header.
pub const BLOB_HEADER_LEN: usize = 32 + 1 + 4 + 4 + 32;
const INDEX_ENTRY_LEN_V1: usize = 32 + 1 + 4 + 4 + 8 + 32;
const INDEX_ENTRY_LEN: usize = INDEX_ENTRY_LEN_V1 + 12;
const MEMBER_LEN: usize = 32 + 4;
/// No blob or frame is larger than this (a chunk is at most 16 MiB; trees are split well below).
pub const MAX_BLOB_BYTES: u32 = 64 << 20;
/// No frame has more members than this.
pub const MAX_FRAME_MEMBERS: u32 = 4096;

/// The stored bytes are zstd-compressed.
pub const FLAG_ZSTD: u8 = 1;
/// The stored bytes are XChaCha20-Poly1305 sealed (nonce first).
pub const FLAG_SEALED: u8 = 2;
/// The blob is a tree (directory listing), not file data.
pub const FLAG_TREE: u8 = 4;
/// The record is a frame of several chunks (a member table follows the header).
pub const FLAG_FRAME: u8 = 8;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_SEALED | FLAG_TREE | FLAG_FRAME;

/// One record's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlobHeader {
    /// Keyed blake3 of the plaintext (a frame: of its first member's plaintext). In an index
    /// entry: the chunk's own id.
    pub id: Id,
    /// `FLAG_*` bits.
    pub flags: u8,
    /// Plaintext length (a frame: of all its members).
    pub raw_len: u32,
    /// Stored length.
    pub stored_len: u32,
    /// blake3 of the member table and the stored bytes.
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

    /// Whether the record is a frame.
    pub fn is_frame(&self) -> bool {
        self.flags & FLAG_FRAME != 0
    }

    fn check(&self, at: &str) -> Result<()> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(Error::corrupt(
                at,
                format!("unknown blob flags {:#x}", self.flags),
            ));
        }
        if self.is_frame() && self.flags & FLAG_TREE != 0 {
            return Err(Error::corrupt(at, "a tree cannot be a frame"));
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

/// One chunk of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// The chunk's id.
    pub id: Id,
    /// Its plaintext length.
    pub len: u32,
}

/// Bytes of a record's header and member table.
pub fn head_len(members: u32) -> usize {
    if members == 0 {
        BLOB_HEADER_LEN
    } else {
        BLOB_HEADER_LEN + 4 + members as usize * MEMBER_LEN
    }
}

/// A frame's member table as stored (count, then the members); empty for a single blob.
pub fn encode_members(members: &[Member], out: &mut Vec<u8>) {
    if members.is_empty() {
        return;
    }
    out.extend_from_slice(&(members.len() as u32).to_le_bytes());
    for m in members {
        out.extend_from_slice(&m.id.0);
        out.extend_from_slice(&m.len.to_le_bytes());
    }
}

/// `record_hash`: blake3 of the member table (if any) and the stored bytes.
pub fn record_hash(members: &[Member], stored: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    if !members.is_empty() {
        let mut table = Vec::with_capacity(4 + members.len() * MEMBER_LEN);
        encode_members(members, &mut table);
        h.update(&table);
    }
    h.update(stored);
    *h.finalize().as_bytes()
}

/// A stored record: a blob, or a frame of chunks, with its stored bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The header.
    pub header: BlobHeader,
    /// A frame's chunks in plaintext order (empty for a single blob).
    pub members: Vec<Member>,
    /// The stored bytes.
    pub stored: Vec<u8>,
}

impl Blob {
    /// The chunk ids the record holds.
    pub fn ids(&self) -> Vec<Id> {
        if self.members.is_empty() {
            vec![self.header.id]
        } else {
            self.members.iter().map(|m| m.id).collect()
        }
    }

    /// Where `id` lies in the record's plaintext: (offset, length).
    pub fn part(&self, id: &Id) -> Option<(usize, usize)> {
        if self.members.is_empty() {
            return (self.header.id == *id).then_some((0, self.header.raw_len as usize));
        }
        let mut off = 0usize;
        for m in &self.members {
            if m.id == *id {
                return Some((off, m.len as usize));
            }
            off += m.len as usize;
        }
        None
    }

    /// Header and member table bytes.
    pub fn encode_head(&self, out: &mut Vec<u8>) {
        self.header.encode(out);
        encode_members(&self.members, out);
    }

    /// Bytes of the whole record.
    pub fn record_len(&self) -> usize {
        head_len(self.members.len() as u32) + self.stored.len()
    }

    /// Whether the member table and stored bytes match the header's hash.
    pub fn hash_ok(&self) -> bool {
        self.stored.len() == self.header.stored_len as usize
            && record_hash(&self.members, &self.stored) == self.header.blob_hash
    }
}

/// Parses the record that starts at `b[0]`: header and member table, checked for consistency
/// (not the hash). Returns them and the offset of the stored bytes; `b` must hold the whole
/// record.
pub fn parse_record(b: &[u8], at: &str) -> Result<(BlobHeader, Vec<Member>, usize)> {
    let hb = b.get(..BLOB_HEADER_LEN).ok_or_else(|| {
        Error::corrupt(
            at,
            format!("truncated record header ({} bytes left)", b.len()),
        )
    })?;
    let header = BlobHeader::decode(hb, at)?;
    let mut members = Vec::new();
    let mut pos = BLOB_HEADER_LEN;
    if header.is_frame() {
        let mut r = Reader {
            b: &b[pos..],
            pos: 0,
            what: at,
        };
        let count = r.u32()?;
        if !(1..=MAX_FRAME_MEMBERS).contains(&count) {
            return Err(Error::corrupt(
                at,
                format!("frame of {count} members (1..={MAX_FRAME_MEMBERS} allowed)"),
            ));
        }
        let mut total = 0u64;
        for _ in 0..count {
            let m = Member {
                id: Id(r.array()?),
                len: r.u32()?,
            };
            total += u64::from(m.len);
            members.push(m);
        }
        if total != u64::from(header.raw_len) {
            return Err(Error::corrupt(
                at,
                format!(
                    "frame members hold {total} bytes, its header says {}",
                    header.raw_len
                ),
            ));
        }
        if members[0].id != header.id {
            return Err(Error::corrupt(
                at,
                "frame header does not name its first member",
            ));
        }
        pos += r.pos;
    }
    let end = pos + header.stored_len as usize;
    if end > b.len() {
        return Err(Error::corrupt(
            at,
            format!(
                "blob {} needs {} bytes, {} left",
                header.id.short(),
                header.stored_len,
                b.len() - pos
            ),
        ));
    }
    Ok((header, members, pos))
}

/// One chunk's place in a pack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its record's header, with `id` set to the chunk's own id.
    pub header: BlobHeader,
    /// Offset of the record's stored bytes in the pack.
    pub offset: u64,
    /// Where the chunk lies in the record's plaintext.
    pub part_off: u32,
    /// Its length (the record's `raw_len` for a single blob).
    pub part_len: u32,
    /// Members of the record's frame (0 for a single blob).
    pub members: u32,
}

impl Entry {
    /// Offset of the record's header in the pack.
    pub fn record_start(&self) -> u64 {
        self.offset.saturating_sub(head_len(self.members) as u64)
    }

    /// The entries of one record at `offset` (stored bytes) in a pack.
    pub fn of_record(header: &BlobHeader, members: &[Member], offset: u64) -> Vec<Entry> {
        if members.is_empty() {
            return vec![Entry {
                header: *header,
                offset,
                part_off: 0,
                part_len: header.raw_len,
                members: 0,
            }];
        }
        let mut off = 0u32;
        members
            .iter()
            .map(|m| {
                let e = Entry {
                    header: BlobHeader {
                        id: m.id,
                        ..*header
                    },
                    offset,
                    part_off: off,
                    part_len: m.len,
                    members: members.len() as u32,
                };
                off += m.len;
                e
            })
            .collect()
    }
}

/// Walks a whole pack file and returns its entries (one per chunk), checking every record hash.
pub fn parse_pack(bytes: &[u8], name: &str) -> Result<Vec<Entry>> {
    let head = bytes.get(..PACK_MAGIC.len());
    if head != Some(PACK_MAGIC.as_slice()) && head != Some(PACK_MAGIC_V1.as_slice()) {
        return Err(Error::corrupt(
            format!("pack {name}"),
            "bad magic or version",
        ));
    }
    let v1 = head == Some(PACK_MAGIC_V1.as_slice());
    let mut pos = PACK_MAGIC.len();
    let mut out = Vec::new();
    while pos < bytes.len() {
        let at = format!("pack {name} at offset {pos}");
        let (header, members, body) = parse_record(&bytes[pos..], &at)?;
        if v1 && header.is_frame() {
            return Err(Error::corrupt(&at, "a version 1 pack cannot hold frames"));
        }
        let start = pos + body;
        let end = start + header.stored_len as usize;
        if record_hash(&members, &bytes[start..end]) != header.blob_hash {
            return Err(Error::corrupt(
                &at,
                format!("blob {} does not match its hash", header.id.short()),
            ));
        }
        out.extend(Entry::of_record(&header, &members, start as u64));
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
            out.extend_from_slice(&e.part_off.to_le_bytes());
            out.extend_from_slice(&e.part_len.to_le_bytes());
            out.extend_from_slice(&e.members.to_le_bytes());
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and checks an index file: checksum, counts, and every entry inside the pack.
    pub fn decode(b: &[u8], name: &str) -> Result<IndexFile> {
        let what = format!("index {name}");
        if b.len() < 5 + 44 + 32 || (&b[..5] != INDEX_MAGIC && &b[..5] != INDEX_MAGIC_V1) {
            return Err(Error::corrupt(&what, "bad magic, version or length"));
        }
        let v1 = &b[..5] == INDEX_MAGIC_V1;
        let entry_len = if v1 {
            INDEX_ENTRY_LEN_V1
        } else {
            INDEX_ENTRY_LEN
        };
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
        if r.b.len() - r.pos != count * entry_len {
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
            let at = format!("{what} entry {i}");
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
            header.check(&at)?;
            let (part_off, part_len, members) = if v1 {
                (0, header.raw_len, 0)
            } else {
                (r.u32()?, r.u32()?, r.u32()?)
            };
            let frame_ok = if header.is_frame() {
                (1..=MAX_FRAME_MEMBERS).contains(&members)
                    && u64::from(part_off) + u64::from(part_len) <= u64::from(header.raw_len)
            } else {
                members == 0 && part_off == 0 && part_len == header.raw_len
            };
            if !frame_ok {
                return Err(Error::corrupt(
                    &at,
                    format!(
                        "part {part_off}+{part_len} of {} bytes in a record of {members} members does not fit",
                        header.raw_len
                    ),
                ));
            }
            if offset < (PACK_MAGIC.len() + head_len(members)) as u64
                || offset
                    .checked_add(u64::from(header.stored_len))
                    .is_none_or(|end| end > pack_len)
            {
                return Err(Error::corrupt(
                    &what,
                    format!("entry {i} lies outside the {pack_len}-byte pack"),
                ));
            }
            entries.push(Entry {
                header,
                offset,
                part_off,
                part_len,
                members,
            });
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

    fn single(i: u8, b: &[u8]) -> Blob {
        Blob {
            header: BlobHeader {
                id: Id([i; 32]),
                flags: 0,
                raw_len: b.len() as u32,
                stored_len: b.len() as u32,
                blob_hash: record_hash(&[], b),
            },
            members: Vec::new(),
            stored: b.to_vec(),
        }
    }

    fn frame(parts: &[(u8, &[u8])]) -> Blob {
        let members: Vec<Member> = parts
            .iter()
            .map(|(i, b)| Member {
                id: Id([*i; 32]),
                len: b.len() as u32,
            })
            .collect();
        let stored: Vec<u8> = parts.iter().flat_map(|(_, b)| b.iter().copied()).collect();
        Blob {
            header: BlobHeader {
                id: members[0].id,
                flags: FLAG_FRAME,
                raw_len: stored.len() as u32,
                stored_len: stored.len() as u32,
                blob_hash: record_hash(&members, &stored),
            },
            members,
            stored,
        }
    }

    fn pack_with(blobs: &[Blob]) -> (Vec<u8>, Vec<Entry>) {
        let mut out = PACK_MAGIC.to_vec();
        let mut entries = Vec::new();
        for b in blobs {
            b.encode_head(&mut out);
            entries.extend(Entry::of_record(&b.header, &b.members, out.len() as u64));
            out.extend_from_slice(&b.stored);
        }
        (out, entries)
    }

    #[test]
    fn packs_and_indexes_round_trip() {
        let f = frame(&[(9, b"first "), (10, b"second "), (11, b"third")]);
        let (pack, entries) = pack_with(&[single(1, b"one"), single(2, b""), f.clone()]);
        assert_eq!(entries.len(), 5);
        assert_eq!(parse_pack(&pack, "p").unwrap(), entries);
        let e = entries[3];
        assert_eq!(
            (e.header.id, e.part_off, e.part_len, e.members),
            (Id([10; 32]), 6, 7, 3)
        );
        assert_eq!(f.part(&Id([11; 32])), Some((13, 5)));
        assert_eq!(f.part(&Id([1; 32])), None);
        let start = e.record_start() as usize;
        let (h, members, body) = parse_record(&pack[start..], "r").unwrap();
        assert_eq!(
            (h, members.as_slice(), start + body),
            (f.header, f.members.as_slice(), e.offset as usize)
        );
        let idx = IndexFile {
            pack_id: *blake3::hash(&pack).as_bytes(),
            pack_len: pack.len() as u64,
            entries,
        };
        assert_eq!(IndexFile::decode(&idx.encode(), "i").unwrap(), idx);
    }

    #[test]
    fn version_1_packs_and_indexes_are_still_read() {
        let b = single(3, b"old data");
        let mut pack = PACK_MAGIC_V1.to_vec();
        b.encode_head(&mut pack);
        let offset = pack.len() as u64;
        pack.extend_from_slice(&b.stored);
        let entries = parse_pack(&pack, "v1").unwrap();
        assert_eq!(entries, Entry::of_record(&b.header, &[], offset));
        let mut idx = INDEX_MAGIC_V1.to_vec();
        idx.extend_from_slice(&[7; 32]);
        idx.extend_from_slice(&(pack.len() as u64).to_le_bytes());
        idx.extend_from_slice(&1u32.to_le_bytes());
        idx.extend_from_slice(&b.header.id.0);
        idx.push(0);
        idx.extend_from_slice(&8u32.to_le_bytes());
        idx.extend_from_slice(&8u32.to_le_bytes());
        idx.extend_from_slice(&offset.to_le_bytes());
        idx.extend_from_slice(&b.header.blob_hash);
        let sum = blake3::hash(&idx);
        idx.extend_from_slice(sum.as_bytes());
        assert_eq!(IndexFile::decode(&idx, "v1").unwrap().entries, entries);
        // A frame in a version 1 pack is refused.
        let mut bad = PACK_MAGIC_V1.to_vec();
        let f = frame(&[(1, b"a"), (2, b"b")]);
        f.encode_head(&mut bad);
        bad.extend_from_slice(&f.stored);
        assert!(parse_pack(&bad, "v1")
            .unwrap_err()
            .to_string()
            .contains("cannot hold frames"));
    }

    #[test]
    fn damage_is_named() {
        let (mut pack, entries) = pack_with(&[single(0, b"hello world")]);
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

    #[test]
    fn frame_damage_is_named() {
        let f = frame(&[(1, b"abc"), (2, b"defg")]);
        let (pack, _) = pack_with(std::slice::from_ref(&f));
        // A flipped bit in the member table is caught by the record hash.
        let mut p = pack.clone();
        p[5 + BLOB_HEADER_LEN + 4 + 40] ^= 1;
        let e = parse_pack(&p, "f").unwrap_err().to_string();
        assert!(e.contains("does not match its hash"), "{e}");
        // Member lengths that do not add up.
        let mut p = pack.clone();
        p[5 + BLOB_HEADER_LEN + 4 + 32] = 9;
        let e = parse_pack(&p, "f").unwrap_err().to_string();
        assert!(
            e.contains("members hold 13 bytes, its header says 7"),
            "{e}"
        );
        // A member count out of bounds.
        let mut p = pack.clone();
        p[5 + BLOB_HEADER_LEN..5 + BLOB_HEADER_LEN + 4].copy_from_slice(&0u32.to_le_bytes());
        let e = parse_pack(&p, "f").unwrap_err().to_string();
        assert!(e.contains("frame of 0 members"), "{e}");
        // Truncated inside the member table.
        let e = parse_pack(&pack[..5 + BLOB_HEADER_LEN + 10], "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("truncated"), "{e}");
    }
}
