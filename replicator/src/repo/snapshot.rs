//! Snapshots: the root of one backup (its tree id) plus who, when and what, stored as JSON (sealed
//! in an encrypted repository) under the blake3 of the stored file. Selection by id prefix,
//! `latest` or time (point-in-time restore), and the keep-policy of `prune`.

use std::collections::{BTreeMap, HashSet};

use chrono::{DateTime, Datelike, Utc};
use serde::{Deserialize, Serialize};

use super::keys::{self, Keys};
use super::Store;
use crate::chunk::Id;
use crate::error::{Error, Result};

/// One snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// When the backup started, ns since the epoch (UTC).
    pub time_ns: i64,
    /// The host that made it.
    pub host: String,
    /// The site (active-active / drill name), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The backed-up directory, as given.
    pub source: String,
    /// Root tree id.
    pub tree: Id,
    /// The snapshot this one was compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// Operator tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Files in the snapshot.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Sum of file sizes.
    pub bytes: u64,
}

impl Snapshot {
    /// The stored form.
    pub fn encode(&self, keys: &Keys) -> Result<Vec<u8>> {
        let json = serde_json::to_vec(self).map_err(|e| Error::Usage(format!("snapshot: {e}")))?;
        match &keys.data {
            Some(c) => keys::seal(c, &json),
            None => Ok(json),
        }
    }

    /// Parses a stored snapshot.
    pub fn decode(stored: &[u8], keys: Option<&Keys>, id: &str) -> Result<Snapshot> {
        let what = || format!("snapshot {}", &id[..id.len().min(8)]);
        let opened;
        let json = match keys.and_then(|k| k.data.as_ref()) {
            Some(c) => {
                opened = keys::open(c, stored)
                    .ok_or_else(|| Error::corrupt(what(), "does not open with the key"))?;
                &opened[..]
            }
            None if stored.first() == Some(&b'{') => stored,
            None => return Err(Error::Key(format!("{} is sealed; give --key-file", what()))),
        };
        serde_json::from_slice(json)
            .map_err(|e| Error::corrupt(what(), format!("does not parse: {e}")))
    }

    /// The start time.
    pub fn time(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.time_ns)
    }
}

/// Every snapshot of a store, oldest first.
pub fn list(store: &dyn Store, keys: Option<&Keys>) -> Result<Vec<(String, Snapshot)>> {
    let mut out = store
        .snapshot_files()?
        .into_iter()
        .map(|(id, bytes)| Snapshot::decode(&bytes, keys, &id).map(|s| (id, s)))
        .collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.1.time_ns.cmp(&b.1.time_ns).then(a.0.cmp(&b.0)));
    Ok(out)
}

/// Picks one snapshot: `latest`, an id or unique id prefix, or a time (`2026-12-04T10:00:00Z`,
/// `2h` = two hours ago): the newest snapshot taken at or before it.
pub fn select(
    snaps: &[(String, Snapshot)],
    selector: &str,
    now_ns: i64,
) -> Result<(String, Snapshot)> {
    if snaps.is_empty() {
        return Err(Error::NoSnapshot(format!(
            "{selector} (the repository has none)"
        )));
    }
    if selector == "latest" {
        return snaps
            .last()
            .cloned()
            .ok_or_else(|| Error::NoSnapshot(selector.into()));
    }
    let by_id: Vec<_> = snaps
        .iter()
        .filter(|(id, _)| selector.len() >= 4 && id.starts_with(selector))
        .collect();
    match by_id.len() {
        1 => return Ok(by_id[0].clone()),
        n if n > 1 => {
            return Err(Error::Usage(format!(
                "snapshot prefix {selector:?} matches {n} snapshots; give more digits"
            )))
        }
        _ => {}
    }
    if let Ok(t) =
        palisade_wire::event::parse_time_spec(selector, palisade_wire::event::Timestamp(now_ns))
    {
        return snaps
            .iter()
            .rev()
            .find(|(_, s)| s.time_ns <= t.nanos())
            .cloned()
            .ok_or_else(|| Error::NoSnapshot(format!("{selector} (no snapshot that old)")));
    }
    Err(Error::NoSnapshot(selector.into()))
}

/// How many snapshots `prune` keeps, borg/restic style: the newest `last`, and the newest in
/// each of the last N hours, days, weeks, months and years that have a snapshot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KeepPolicy {
    /// Newest N.
    pub last: usize,
    /// One per hour, for N hours.
    pub hourly: usize,
    /// One per day.
    pub daily: usize,
    /// One per ISO week.
    pub weekly: usize,
    /// One per month.
    pub monthly: usize,
    /// One per year.
    pub yearly: usize,
    /// Everything younger than this many seconds.
    pub within_secs: u64,
}

impl KeepPolicy {
    /// Whether the policy keeps nothing at all (refused: that would delete every snapshot).
    pub fn is_empty(&self) -> bool {
        *self == KeepPolicy::default()
    }

    /// The ids to keep, with the reasons.
    pub fn apply(
        &self,
        snaps: &[(String, Snapshot)],
        now_ns: i64,
    ) -> BTreeMap<String, Vec<&'static str>> {
        let mut keep: BTreeMap<String, Vec<&'static str>> = BTreeMap::new();
        let newest_first: Vec<_> = snaps.iter().rev().collect();
        for (id, _) in newest_first.iter().take(self.last) {
            keep.entry(id.clone()).or_default().push("last");
        }
        type Bucket = fn(&DateTime<Utc>) -> String;
        let buckets: [(usize, &'static str, Bucket); 5] = [
            (self.hourly, "hourly", |t| {
                t.format("%Y-%m-%d %H").to_string()
            }),
            (self.daily, "daily", |t| t.format("%Y-%m-%d").to_string()),
            (self.weekly, "weekly", |t| {
                let w = t.iso_week();
                format!("{}-{}", w.year(), w.week())
            }),
            (self.monthly, "monthly", |t| t.format("%Y-%m").to_string()),
            (self.yearly, "yearly", |t| t.format("%Y").to_string()),
        ];
        for (n, why, bucket) in buckets {
            let mut seen = HashSet::new();
            for (id, s) in &newest_first {
                if seen.len() >= n {
                    break;
                }
                if seen.insert(bucket(&s.time())) {
                    keep.entry(id.clone()).or_default().push(why);
                }
            }
        }
        if self.within_secs > 0 {
            let cutoff =
                now_ns.saturating_sub((self.within_secs as i64).saturating_mul(1_000_000_000));
            for (id, s) in &newest_first {
                if s.time_ns >= cutoff {
                    keep.entry(id.clone()).or_default().push("within");
                }
            }
        }
        keep
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(time_ns: i64) -> Snapshot {
        Snapshot {
            time_ns,
            host: "h".into(),
            site: None,
            source: "/data".into(),
            tree: Id([0; 32]),
            parent: None,
            tags: vec![],
            files: 0,
            dirs: 0,
            bytes: 0,
        }
    }

    const HOUR: i64 = 3_600_000_000_000;

    #[test]
    fn point_in_time_picks_the_newest_at_or_before() {
        let snaps: Vec<_> = (0..5)
            .map(|i| (format!("{i:064}"), snap(i * 24 * HOUR)))
            .collect();
        let now = 4 * 24 * HOUR + HOUR;
        assert_eq!(select(&snaps, "latest", now).unwrap().0, snaps[4].0);
        assert_eq!(select(&snaps, "25h", now).unwrap().0, snaps[3].0);
        assert!(select(&snaps, "1000d", now).is_err());
        let e = select(&snaps, "0000", now).unwrap_err().to_string();
        assert!(e.contains("matches 5 snapshots"), "{e}");
    }

    #[test]
    fn keep_daily_keeps_one_per_day() {
        // Four snapshots a day for ten days.
        let snaps: Vec<_> = (0..40)
            .map(|i| (format!("{i:064}"), snap(i * 6 * HOUR)))
            .collect();
        let keep = KeepPolicy {
            daily: 3,
            last: 1,
            ..KeepPolicy::default()
        }
        .apply(&snaps, 40 * 6 * HOUR);
        assert_eq!(keep.len(), 3, "{keep:?}");
        assert!(keep[&snaps[39].0].contains(&"last"));
    }
}
