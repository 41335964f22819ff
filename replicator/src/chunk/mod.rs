//! Content-defined chunking (FastCDC 2020, seeded gear table) and chunk identity (keyed blake3).
//!
//! The seed and the id key are per repository, so neither chunk boundaries nor chunk ids can be
//! used to confirm that a known file is stored in somebody else's repository.

use std::fmt;
use std::io::{self, Read};
use std::str::FromStr;

use fastcdc::v2020::{FastCDC, Normalization};
use serde::{Deserialize, Serialize};

/// A blob's identity: keyed blake3 of its plaintext.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Lowercase hex.
    pub fn hex(&self) -> String {
        hex(&self.0)
    }

    /// The first 8 hex digits, for people.
    pub fn short(&self) -> String {
        self.hex()[..8].to_string()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// Lowercase hex of every byte (leading zeros kept, unlike certificate serials).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

/// Parses 64 hex digits.
pub fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

impl FromStr for Id {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex32(s)
            .map(Id)
            .ok_or_else(|| format!("{s:?} is not a 64-digit hex id"))
    }
}

impl Serialize for Id {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Chunk size bounds and the gear seed, fixed when the repository is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// Smallest chunk, bytes (except a file's last).
    pub min_bytes: u32,
    /// Target average chunk, bytes.
    pub avg_bytes: u32,
    /// Largest chunk, bytes.
    pub max_bytes: u32,
    /// XORed into FastCDC's gear table.
    pub seed: u64,
}

impl ChunkerParams {
    /// 16 / 64 / 256 KiB with a random seed.
    pub fn new_random() -> Self {
        let mut seed = [0u8; 8];
        // A fixed seed only weakens fingerprinting resistance, never correctness.
        let _ = getrandom::fill(&mut seed);
        ChunkerParams {
            min_bytes: 16 << 10,
            avg_bytes: 64 << 10,
            max_bytes: 256 << 10,
            seed: u64::from_le_bytes(seed),
        }
    }

    /// Checks the bounds FastCDC accepts.
    pub fn validate(&self) -> Result<(), String> {
        use fastcdc::v2020::{
            AVERAGE_MAX, AVERAGE_MIN, MAXIMUM_MAX, MAXIMUM_MIN, MINIMUM_MAX, MINIMUM_MIN,
        };
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&self.min_bytes)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&self.avg_bytes)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&self.max_bytes)
            && self.min_bytes <= self.avg_bytes
            && self.avg_bytes <= self.max_bytes
            && self.min_bytes % 2 == 0
            && self.avg_bytes % 2 == 0
            && self.max_bytes % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(format!(
                "chunk sizes {}/{}/{} are outside FastCDC's bounds or not even and ordered",
                self.min_bytes, self.avg_bytes, self.max_bytes
            ))
        }
    }
}

/// Keyed blake3 of a blob's plaintext.
pub fn blob_id(key: &[u8; 32], data: &[u8]) -> Id {
    Id(*blake3::keyed_hash(key, data).as_bytes())
}

/// Splits a stream into content-defined chunks, reading it through a bounded buffer.
#[derive(Debug)]
pub struct Chunker {
    params: ChunkerParams,
    /// Allocated (and zeroed) once at its full size; `filled` says how much holds the stream.
    buf: Vec<u8>,
}

impl Chunker {
    /// A chunker holding up to 4 × `max_bytes` (at least 4 MiB) of the stream at a time.
    pub fn new(params: ChunkerParams) -> Self {
        let cap = (params.max_bytes as usize * 4).max(4 << 20);
        Chunker {
            params,
            buf: vec![0; cap],
        }
    }

    /// Calls `each` with every chunk of `source`, in order. Returns the bytes read.
    pub fn for_each_chunk<R: Read, E>(
        &mut self,
        mut source: R,
        mut each: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<u64, ChunkError<E>> {
        let p = self.params;
        let cap = self.buf.len();
        let mut filled = 0usize;
        let mut total = 0u64;
        let mut eof = false;
        loop {
            while !eof && filled < cap {
                match source.read(&mut self.buf[filled..]) {
                    Ok(0) => eof = true,
                    Ok(n) => {
                        filled += n;
                        total += n as u64;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ChunkError::Read(e)),
                }
            }
            if filled == 0 {
                return Ok(total);
            }
            let data = &self.buf[..filled];
            let cdc = FastCDC::with_level_and_seed(
                data,
                p.min_bytes,
                p.avg_bytes,
                p.max_bytes,
                Normalization::Level1,
                p.seed,
            );
            let mut consumed = 0usize;
            for c in cdc {
                let end = c.offset + c.length;
                // The last cut of a partial buffer is where the buffer ends, not where the
                // content says: keep it for the next round unless the stream has ended.
                if end == filled && !eof {
                    break;
                }
                each(&data[c.offset..end]).map_err(ChunkError::Sink)?;
                consumed = end;
            }
            if consumed == 0 && !eof {
                // Cannot happen with cap ≥ 4 × max, but never loop forever.
                consumed = filled;
                each(data).map_err(ChunkError::Sink)?;
            }
            self.buf.copy_within(consumed..filled, 0);
            filled -= consumed;
            if eof && filled == 0 {
                return Ok(total);
            }
        }
    }
}

/// Chunking failed while reading the source or in the caller's sink.
#[derive(Debug)]
pub enum ChunkError<E> {
    /// Reading the source failed.
    Read(io::Error),
    /// The sink failed.
    Sink(E),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ChunkerParams {
        ChunkerParams {
            min_bytes: 2048,
            avg_bytes: 8192,
            max_bytes: 32768,
            seed: 7,
        }
    }

    fn chunks(data: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        Chunker::new(params())
            .for_each_chunk::<_, ()>(data, |c| {
                out.push(c.to_vec());
                Ok(())
            })
            .map_err(|_| ())
            .unwrap();
        out
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let mut data = vec![0u8; 9 << 20];
        fastrand::Rng::with_seed(1).fill(&mut data);
        let cs = chunks(&data);
        assert_eq!(cs.concat(), data);
        for c in &cs[..cs.len() - 1] {
            assert!(c.len() >= 2048 && c.len() <= 32768, "{}", c.len());
        }
    }

    #[test]
    fn an_insert_moves_only_nearby_boundaries() {
        let mut data = vec![0u8; 2 << 20];
        fastrand::Rng::with_seed(2).fill(&mut data);
        let before = chunks(&data);
        data.splice(1 << 20..1 << 20, b"inserted bytes".iter().copied());
        let after = chunks(&data);
        let old: std::collections::HashSet<_> = before.iter().collect();
        let changed = after.iter().filter(|c| !old.contains(c)).count();
        assert!(changed <= 3, "{changed} chunks changed for one insert");
    }

    #[test]
    fn ids_depend_on_the_key() {
        assert_ne!(blob_id(&[1; 32], b"x"), blob_id(&[2; 32], b"x"));
        let id = blob_id(&[1; 32], b"x");
        assert_eq!(id.hex().parse::<Id>().unwrap(), id);
        assert!("zz".parse::<Id>().is_err());
        let zero_led = Id([0; 32]);
        assert_eq!(zero_led.hex().parse::<Id>().unwrap(), zero_led);
    }
}
