//! Segment bodies live in append-only files, one per UTC day (`segments/YYYY-MM-DD.seg`); sled
//! holds only a small pointer per segment (its header, file offset and length). sled's memory
//! grows with the bytes it stores, so keeping the bulk out of it keeps the collector's RSS flat.
//!
//! Write order: append bodies, `fsync` the files, then commit the pointers in sled and flush.
//! A crash between the two leaves unreferenced bytes at a file's end (harmless: nothing points
//! at them, and later appends go after them); it can never leave a pointer to missing bytes.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::segment::HEADER_LEN;
use super::StoreError;

/// Length of a pointer record: the segment header, then offset (8) and length (4).
pub(crate) const POINTER_LEN: usize = HEADER_LEN + 12;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

struct Open {
    file: File,
    len: u64,
    dirty: bool,
}

/// The day files.
pub(crate) struct SegmentFiles {
    dir: PathBuf,
    open: Mutex<HashMap<String, Open>>,
}

impl SegmentFiles {
    pub fn new(dir: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        Ok(SegmentFiles {
            dir,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn path(&self, day: &str) -> PathBuf {
        self.dir.join(format!("{day}.seg"))
    }

    /// Appends a finished segment (header + body) to `day`'s file; returns its pointer record.
    /// Not durable until [`SegmentFiles::sync`].
    pub fn append(&self, day: &str, segment: &[u8]) -> Result<Vec<u8>, StoreError> {
        let path = self.path(day);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !open.contains_key(day) {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            let len = file.metadata().map_err(io(&path))?.len();
            open.insert(
                day.to_string(),
                Open {
                    file,
                    len,
                    dirty: false,
                },
            );
        }
        let Some(f) = open.get_mut(day) else {
            return Err(StoreError::Corrupt {
                tree: day.to_string(),
                reason: "segment file handle vanished".into(),
            });
        };
        let offset = f.len;
        if let Err(e) = f.file.write_all(segment) {
            // Whatever part was written is unreferenced; re-read the true length.
            f.len = f.file.metadata().map(|m| m.len()).unwrap_or(f.len);
            return Err(io(&path)(e));
        }
        f.len += segment.len() as u64;
        f.dirty = true;
        let len = u32::try_from(segment.len()).map_err(|_| StoreError::Corrupt {
            tree: day.to_string(),
            reason: "segment larger than 4 GiB".into(),
        })?;
        let mut pointer = Vec::with_capacity(POINTER_LEN);
        pointer.extend_from_slice(segment.get(..HEADER_LEN).unwrap_or(segment));
        pointer.extend_from_slice(&offset.to_be_bytes());
        pointer.extend_from_slice(&len.to_be_bytes());
        Ok(pointer)
    }

    /// fsyncs every file appended to since the last sync.
    pub fn sync(&self) -> Result<(), StoreError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        for (day, f) in open.iter_mut().filter(|(_, f)| f.dirty) {
            f.file.sync_data().map_err(io(&self.path(day)))?;
            f.dirty = false;
        }
        Ok(())
    }

    /// Reads the segment a pointer record refers to, checking it is the one the pointer
    /// describes.
    pub fn read(&self, day: &str, pointer: &[u8]) -> Result<Vec<u8>, StoreError> {
        let path = self.path(day);
        let bad = |reason: &str| StoreError::Corrupt {
            tree: format!("d/{day}"),
            reason: reason.to_string(),
        };
        let offset: [u8; 8] = pointer
            .get(HEADER_LEN..HEADER_LEN + 8)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("segment pointer too short"))?;
        let len: [u8; 4] = pointer
            .get(HEADER_LEN + 8..POINTER_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("segment pointer too short"))?;
        let mut buf = vec![0u8; u32::from_be_bytes(len) as usize];
        let file = File::open(&path).map_err(io(&path))?;
        file.read_exact_at(&mut buf, u64::from_be_bytes(offset))
            .map_err(io(&path))?;
        if buf.get(..HEADER_LEN) != pointer.get(..HEADER_LEN) {
            return Err(bad("segment file bytes do not match their pointer"));
        }
        Ok(buf)
    }

    /// Bytes in all segment files.
    pub fn size(&self) -> u64 {
        std::fs::read_dir(&self.dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }

    /// Deletes `day`'s file (retention).
    pub fn remove(&self, day: &str) -> Result<(), StoreError> {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(day);
        let path = self.path(day);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::segment::Builder;

    fn seg(seq: u64) -> Vec<u8> {
        let mut b = Builder::new(seq as i64, seq);
        b.push(seq as i64, seq, 1, 1, format!("{{\"n\":{seq}}}").as_bytes());
        b.finish(1).unwrap()
    }

    #[test]
    fn torn_tail_is_skipped_and_mismatches_are_caught() {
        let dir = tempfile::tempdir().unwrap();
        let files = SegmentFiles::new(dir.path().to_path_buf()).unwrap();
        let p1 = files.append("2026-11-21", &seg(1)).unwrap();
        files.sync().unwrap();
        // A crash mid-append leaves a torn tail that nothing points at.
        drop(files);
        let path = dir.path().join("2026-11-21.seg");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&seg(2)[..20]).unwrap();
        drop(f);
        let files = SegmentFiles::new(dir.path().to_path_buf()).unwrap();
        let p3 = files.append("2026-11-21", &seg(3)).unwrap();
        files.sync().unwrap();
        assert_eq!(files.read("2026-11-21", &p1).unwrap(), seg(1));
        assert_eq!(files.read("2026-11-21", &p3).unwrap(), seg(3));
        // A pointer whose header does not match the bytes at its offset is corruption.
        let mut wrong = p3.clone();
        wrong[..HEADER_LEN].copy_from_slice(&p1[..HEADER_LEN]);
        assert!(files.read("2026-11-21", &wrong).is_err());
        assert!(files.read("2026-11-21", &p1[..10]).is_err());
        files.remove("2026-11-21").unwrap();
        assert!(files.read("2026-11-21", &p1).is_err());
        assert_eq!(files.size(), 0);
    }
}
