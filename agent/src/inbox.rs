//! Events from commands run beside the agent (`baseline`, `publish`, `quarantine restore`, …).
//! The running agent holds the spool open (sled locks it), so such commands write their events
//! to `<data_dir>/inbox/` as NDJSON files (written to a temporary name, fsynced, renamed), and
//! `palisade-agent run` moves them into the spool at start and every second, deleting a file
//! only once its events are spooled. A file that does not parse is set aside as `.bad`.

use std::io::Write;
use std::path::{Path, PathBuf};

use palisade_wire::Event;

use crate::spool::Spool;

/// The inbox of a data dir.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("inbox")
}

/// Drops `events` into the inbox; returns the file written.
pub fn write(data_dir: &Path, events: &[Event]) -> std::io::Result<PathBuf> {
    let dir = dir(data_dir);
    std::fs::create_dir_all(&dir)?;
    let name = format!(
        "{:020}-{}-{:08x}",
        palisade_wire::Timestamp::now().0,
        std::process::id(),
        fastrand::u32(..)
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let path = dir.join(format!("{name}.ndjson"));
    let mut f = std::fs::File::create(&tmp)?;
    for e in events {
        f.write_all(&e.to_json())?;
        f.write_all(b"\n")?;
    }
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Moves every inbox file's events into `spool`; returns how many events were moved.
pub fn drain(data_dir: &Path, spool: &Spool) -> usize {
    let dir = dir(data_dir);
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|d| d.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    let mut moved = 0;
    for path in files {
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read inbox file");
                continue;
            }
        };
        let mut events = Vec::new();
        let mut bad = None;
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Event>(line) {
                Ok(e) => events.push(e),
                Err(e) => {
                    bad = Some(format!("line {}: {e}", n + 1));
                    break;
                }
            }
        }
        if let Some(why) = bad {
            tracing::error!(file = %path.display(), error = %why, "inbox file does not parse; set aside as .bad");
            let _ = std::fs::rename(&path, path.with_extension("bad"));
            continue;
        }
        let n = events.len();
        match spool.append(events) {
            Ok(_) => {
                moved += n;
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(file = %path.display(), error = %e, "cannot remove spooled inbox file");
                }
            }
            Err(e) => {
                tracing::error!(file = %path.display(), error = %e, "cannot spool inbox events; will retry");
                break;
            }
        }
    }
    moved
}
