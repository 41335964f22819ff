//! `audit::verify`: walks every day file in order and checks each record's hash and its link
//! to the record before it, then the chain against the anchors. A finding names the file, the
//! line, the seq and what is wrong. The walk streams: memory is bounded by a window of the last
//! [`WINDOW`] records, which is how far apart a moved record and its place may be and still be
//! called "reordered" rather than "deleted" + "inserted".

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::record::{self, Anchor, GENESIS};
use super::{day_files, io_err, AuditError, ANCHORS_FILE};

/// Records remembered behind the chain head.
pub const WINDOW: usize = 65_536;

/// What is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A record's content does not match its hash.
    Edited,
    /// Records are missing (seq gap).
    Deleted,
    /// A whole day file is missing (seq gap across days with no file).
    DeletedFile,
    /// A record that is not part of the chain.
    Inserted,
    /// A genuine record out of its place.
    Reordered,
    /// A record links to a predecessor whose hash is not what it expects (rewritten chain).
    ChainBroken,
    /// A line that is not a record.
    Unparseable,
    /// A record in the file of another day.
    WrongFile,
    /// The log ends before the last anchor's seq.
    Truncated,
    /// A record's hash differs from the anchor for its seq.
    AnchorMismatch,
    /// Warning: the last line is incomplete (crash or a write in progress).
    TornTail,
    /// Warning: torn bytes saved by crash recovery.
    TornEvidence,
    /// Warning: no anchors, so a truncated tail cannot be detected.
    NoAnchors,
    /// Warning: an anchor line that does not parse.
    BadAnchor,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// What.
    pub kind: FindingKind,
    /// File name inside the audit directory.
    pub file: Option<String>,
    /// Line number (from 1).
    pub line: Option<u64>,
    /// The seq concerned (for deletions and truncation: the first missing one).
    pub seq: Option<u64>,
    /// Explanation for an assessor.
    pub message: String,
}

/// One day file's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSummary {
    /// File name.
    pub file: String,
    /// Lines holding a record.
    pub records: u64,
    /// First seq in the file.
    pub first_seq: Option<u64>,
    /// Last seq in the file.
    pub last_seq: Option<u64>,
}

/// The result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The audit directory.
    pub dir: PathBuf,
    /// True when no tampering was found (warnings allowed).
    pub intact: bool,
    /// Records read.
    pub records: u64,
    /// Seq of the chain head.
    pub last_seq: u64,
    /// Hash of the chain head (hex).
    pub last_hash: String,
    /// Anchors read.
    pub anchors: u64,
    /// Day files, oldest first.
    pub files: Vec<FileSummary>,
    /// Tampering found, in file order.
    pub findings: Vec<Finding>,
    /// Things to know that are not tampering.
    pub warnings: Vec<Finding>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
struct Loc {
    file: usize,
    line: u64,
}

#[derive(Clone, Copy)]
struct Seen {
    seq: u64,
    loc: Loc,
}

#[derive(Clone, Copy)]
struct Link {
    /// Its place in the chain.
    seq: u64,
    /// The seq the line claims (differs from `seq` only for an edited line).
    claimed: u64,
    hash: [u8; 32],
    loc: Option<Loc>,
}

enum Issue {
    Plain {
        kind: FindingKind,
        loc: Loc,
        seq: Option<u64>,
        message: String,
    },
    Gap {
        after: Option<Loc>,
        after_seq: u64,
        at: Loc,
        at_seq: u64,
        missing: Vec<(u64, u64)>,
    },
}

struct Walk<'a> {
    names: &'a [String],
    head: Link,
    /// Hash → where that record was (any record read, on the chain or not).
    window: HashMap<[u8; 32], Seen>,
    order: VecDeque<[u8; 32]>,
    /// The chain as accepted, newest last (bounded like `window`).
    chain: VecDeque<Link>,
    issues: Vec<Option<Issue>>,
    /// Loc → index in `issues`, for records later found to be off the chain.
    issue_at: HashMap<Loc, usize>,
    anchors: BTreeMap<u64, ([u8; 32], u64)>,
    anchors_checked: Vec<u64>,
}

impl Walk<'_> {
    fn at(&self, loc: Loc) -> String {
        format!(
            "{}:{}",
            self.names.get(loc.file).map_or("?", String::as_str),
            loc.line
        )
    }

    fn at_opt(&self, loc: Option<Loc>) -> String {
        loc.map_or_else(|| "the start of the log".into(), |l| self.at(l))
    }

    fn push(&mut self, issue: Issue) {
        let loc = match &issue {
            Issue::Plain { loc, .. } => *loc,
            Issue::Gap { at, .. } => *at,
        };
        self.issue_at.insert(loc, self.issues.len());
        self.issues.push(Some(issue));
    }

    fn plain(&mut self, kind: FindingKind, loc: Loc, seq: Option<u64>, message: String) {
        self.push(Issue::Plain {
            kind,
            loc,
            seq,
            message,
        });
    }

    fn remember(&mut self, hash: [u8; 32], seen: Seen) {
        if self.window.insert(hash, seen).is_none() {
            self.order.push_back(hash);
            if self.order.len() > WINDOW {
                if let Some(old) = self.order.pop_front() {
                    self.window.remove(&old);
                }
            }
        }
    }

    fn accept(&mut self, link: Link) {
        self.check_anchor(link);
        self.head = link;
        self.chain.push_back(link);
        if self.chain.len() > WINDOW {
            self.chain.pop_front();
        }
    }

    fn check_anchor(&mut self, link: Link) {
        if let Some((hash, line)) = self.anchors.get(&link.seq).copied() {
            self.anchors_checked.push(link.seq);
            if hash != link.hash {
                if let Some(loc) = link.loc {
                    self.plain(
                        FindingKind::AnchorMismatch,
                        loc,
                        Some(link.seq),
                        format!(
                            "seq {} has hash {} but anchor line {line} of {ANCHORS_FILE} recorded {}: the chain up to here was rewritten",
                            link.seq,
                            record::hex(&link.hash),
                            record::hex(&hash)
                        ),
                    );
                }
            }
        }
    }

    /// Removes `seq` from a pending gap; true if one covered it.
    fn retract_gap(&mut self, seq: u64) -> bool {
        for slot in self.issues.iter_mut() {
            let Some(Issue::Gap { missing, .. }) = slot else {
                continue;
            };
            let Some(i) = missing.iter().position(|&(a, b)| a <= seq && seq <= b) else {
                continue;
            };
            let (a, b) = missing.remove(i);
            if a < seq {
                missing.push((a, seq - 1));
            }
            if seq < b {
                missing.push((seq + 1, b));
            }
            missing.sort_unstable();
            if missing.is_empty() {
                *slot = None;
            }
            return true;
        }
        false
    }

    /// A line that is a record with a valid own hash, or an edited one (`hash_ok` false).
    fn record(
        &mut self,
        loc: Loc,
        seq: u64,
        prev: [u8; 32],
        hash: [u8; 32],
        hash_ok: bool,
        prev_parsed: bool,
    ) {
        let expected = self.head.seq + 1;
        if !hash_ok {
            // It takes the next slot with its stored hash, so a record that still links to it
            // does not report it twice. If the next record links past it, it becomes "inserted".
            let what = if prev_parsed {
                "its content does not match its hash: the record was edited"
            } else {
                "the line no longer parses as a record: it was edited"
            };
            self.plain(
                FindingKind::Edited,
                loc,
                Some(seq),
                format!("seq {seq}: {what}"),
            );
            self.remember(hash, Seen { seq: expected, loc });
            self.accept(Link {
                seq: expected,
                claimed: seq,
                hash,
                loc: Some(loc),
            });
            return;
        }
        self.remember(hash, Seen { seq, loc });
        if seq == expected && prev == self.head.hash {
            self.accept(Link {
                seq,
                claimed: seq,
                hash,
                loc: Some(loc),
            });
            return;
        }
        let pred = self.window.get(&prev).copied();
        match pred {
            Some(p) if p.seq + 1 == seq => {
                if seq < expected && self.retract_gap(seq) {
                    self.plain(
                        FindingKind::Reordered,
                        loc,
                        Some(seq),
                        format!(
                            "seq {seq} is out of order: it follows seq {} at {} and belongs right after it, not after seq {} at {}",
                            p.seq,
                            self.at(p.loc),
                            self.head.seq,
                            self.at_opt(self.head.loc)
                        ),
                    );
                    self.check_anchor(Link {
                        seq,
                        claimed: seq,
                        hash,
                        loc: Some(loc),
                    });
                    return;
                }
                let on_chain = self.chain.iter().rposition(|l| l.loc == Some(p.loc));
                match on_chain {
                    Some(i) if i + 1 < self.chain.len() => {
                        // A fork at `p`: what the chain took after `p` is not genuine.
                        let off: Vec<Link> = self.chain.drain(i + 1..).collect();
                        for l in off {
                            let Some(l_loc) = l.loc else { continue };
                            let message = format!(
                                "line is not part of the chain: seq {seq} at {} links to seq {} at {}, skipping this record (seq {}); it was inserted",
                                self.at(loc),
                                p.seq,
                                self.at(p.loc),
                                l.claimed
                            );
                            match self.issue_at.get(&l_loc).copied() {
                                Some(idx) => {
                                    self.issues[idx] = Some(Issue::Plain {
                                        kind: FindingKind::Inserted,
                                        loc: l_loc,
                                        seq: Some(l.claimed),
                                        message: format!("{message} (and its hash is not even valid)"),
                                    })
                                }
                                None => self.plain(FindingKind::Inserted, l_loc, Some(l.claimed), message),
                            }
                        }
                        self.head = self.chain.back().copied().unwrap_or(Link {
                            seq: p.seq,
                            claimed: p.seq,
                            hash: prev,
                            loc: Some(p.loc),
                        });
                        self.accept(Link {
                            seq,
                            claimed: seq,
                            hash,
                            loc: Some(loc),
                        });
                    }
                    _ => self.plain(
                        FindingKind::Inserted,
                        loc,
                        Some(seq),
                        format!(
                            "seq {seq} is not part of the chain: it continues the record at {}, which is not part of it either",
                            self.at(p.loc)
                        ),
                    ),
                }
            }
            Some(p) => self.plain(
                FindingKind::Inserted,
                loc,
                Some(seq),
                format!(
                    "seq {seq} links to the record at {} which has seq {}: a forged record",
                    self.at(p.loc),
                    p.seq
                ),
            ),
            None if seq > expected => {
                self.push(Issue::Gap {
                    after: self.head.loc,
                    after_seq: self.head.seq,
                    at: loc,
                    at_seq: seq,
                    missing: vec![(expected, seq - 1)],
                });
                self.accept(Link {
                    seq,
                    claimed: seq,
                    hash,
                    loc: Some(loc),
                });
            }
            None if seq == expected => {
                self.plain(
                    FindingKind::ChainBroken,
                    loc,
                    Some(seq),
                    format!(
                        "seq {seq} expects a predecessor with hash {} but seq {} at {} has hash {}: that record was rewritten with a recomputed hash, or this one was forged",
                        record::hex(&prev),
                        self.head.seq,
                        self.at_opt(self.head.loc),
                        record::hex(&self.head.hash)
                    ),
                );
                self.accept(Link {
                    seq,
                    claimed: seq,
                    hash,
                    loc: Some(loc),
                });
            }
            None => {
                if self.retract_gap(seq) {
                    self.plain(
                        FindingKind::Reordered,
                        loc,
                        Some(seq),
                        format!(
                            "seq {seq} is out of order: it appears after seq {} at {}",
                            self.head.seq,
                            self.at_opt(self.head.loc)
                        ),
                    );
                } else {
                    self.plain(
                        FindingKind::Inserted,
                        loc,
                        Some(seq),
                        format!(
                            "seq {seq} is behind the chain (at seq {} at {}) and its predecessor is not in the log: a forged or duplicated record",
                            self.head.seq,
                            self.at_opt(self.head.loc)
                        ),
                    );
                }
            }
        }
    }
}

fn read_anchors(
    dir: &Path,
    warnings: &mut Vec<Finding>,
) -> Result<BTreeMap<u64, ([u8; 32], u64)>, AuditError> {
    let path = dir.join(ANCHORS_FILE);
    let mut out = BTreeMap::new();
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io_err("cannot read", &path)(e)),
    };
    for (i, line) in data.split(|&b| b == b'\n').enumerate() {
        if line.is_empty() {
            continue;
        }
        let n = i as u64 + 1;
        let parsed = serde_json::from_slice::<Anchor>(line)
            .ok()
            .and_then(|a| Some((a.seq, record::unhex32(&a.hash)?)));
        match parsed {
            Some((seq, hash)) => {
                out.insert(seq, (hash, n));
            }
            None => warnings.push(Finding {
                kind: FindingKind::BadAnchor,
                file: Some(ANCHORS_FILE.into()),
                line: Some(n),
                seq: None,
                message: format!("line {n} of {ANCHORS_FILE} is not an anchor"),
            }),
        }
    }
    Ok(out)
}

/// Verifies the audit directory `dir`. `Err` only when files cannot be read; tampering is in
/// the report.
pub fn verify(dir: &Path) -> Result<Report, AuditError> {
    if !dir.is_dir() {
        return Err(AuditError::Io {
            action: "cannot open audit directory",
            path: dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let files = day_files(dir)?;
    let names: Vec<String> = files.iter().map(|(d, _)| format!("{d}.log")).collect();
    let mut warnings = Vec::new();
    let anchors = read_anchors(dir, &mut warnings)?;
    let mut walk = Walk {
        names: &names,
        head: Link {
            seq: 0,
            claimed: 0,
            hash: GENESIS,
            loc: None,
        },
        window: HashMap::new(),
        order: VecDeque::new(),
        chain: VecDeque::new(),
        issues: Vec::new(),
        issue_at: HashMap::new(),
        anchors,
        anchors_checked: Vec::new(),
    };
    let mut summaries = Vec::new();
    let mut records = 0u64;
    for (fi, (day, path)) in files.iter().enumerate() {
        let last_file = fi + 1 == files.len();
        let mut summary = FileSummary {
            file: names[fi].clone(),
            records: 0,
            first_seq: None,
            last_seq: None,
        };
        let f = std::fs::File::open(path).map_err(io_err("cannot open audit file", path))?;
        let mut reader = BufReader::new(f);
        let mut buf = Vec::new();
        let mut n = 0u64;
        loop {
            buf.clear();
            let got = reader
                .read_until(b'\n', &mut buf)
                .map_err(io_err("cannot read audit file", path))?;
            if got == 0 {
                break;
            }
            n += 1;
            let loc = Loc { file: fi, line: n };
            let complete = buf.last() == Some(&b'\n');
            if complete {
                buf.pop();
            } else {
                let finding = Finding {
                    kind: FindingKind::TornTail,
                    file: Some(names[fi].clone()),
                    line: Some(n),
                    seq: None,
                    message: format!(
                        "line {n} is incomplete ({} bytes, no newline): a crash or a write in progress; the collector moves it to {}.torn when it starts",
                        buf.len(),
                        names[fi]
                    ),
                };
                if last_file {
                    warnings.push(finding);
                    break;
                }
                walk.plain(
                    FindingKind::Unparseable,
                    loc,
                    None,
                    format!(
                        "incomplete line ({} bytes, no newline) in a file that is not the last",
                        buf.len()
                    ),
                );
                break;
            }
            if buf.is_empty() {
                walk.plain(FindingKind::Unparseable, loc, None, "empty line".into());
                continue;
            }
            let Some(p) = record::parse_line(&buf) else {
                walk.plain(
                    FindingKind::Unparseable,
                    loc,
                    None,
                    "line does not end with a well-formed hash field: not a record, or its hash was damaged".into(),
                );
                continue;
            };
            records += 1;
            summary.records += 1;
            let (seq, prev, prev_parsed) = match &p.record {
                Ok(r) => {
                    if r.time.day() != *day {
                        walk.plain(
                            FindingKind::WrongFile,
                            loc,
                            Some(r.seq),
                            format!(
                                "seq {} is dated {} but sits in the file of {day}",
                                r.seq, r.time
                            ),
                        );
                    }
                    (r.seq, record::unhex32(&r.prev), true)
                }
                Err(_) => (walk.head.seq + 1, None, false),
            };
            let hash_ok = p.hash_ok && prev.is_some();
            walk.record(
                loc,
                seq,
                prev.unwrap_or(GENESIS),
                p.stored_hash,
                hash_ok,
                prev_parsed,
            );
            summary.first_seq.get_or_insert(seq);
            summary.last_seq = Some(seq);
        }
        summaries.push(summary);
    }

    // Anchors beyond the end of the log: the tail was cut off.
    let checked: std::collections::HashSet<u64> = walk.anchors_checked.iter().copied().collect();
    let head = walk.head;
    if let Some((&aseq, &(_, aline))) = walk.anchors.iter().next_back() {
        if aseq > head.seq && !checked.contains(&aseq) {
            let at = head
                .loc
                .map_or_else(|| "no records at all".into(), |l| walk.at(l));
            walk.issues.push(Some(Issue::Plain {
                kind: FindingKind::Truncated,
                loc: head.loc.unwrap_or(Loc { file: usize::MAX, line: 0 }),
                seq: Some(head.seq + 1),
                message: format!(
                    "the log ends at seq {} ({at}) but anchor line {aline} of {ANCHORS_FILE} vouches for seq {aseq}: seq {}..={aseq} were cut off the tail",
                    head.seq,
                    head.seq + 1
                ),
            }));
        }
    } else if records > 0 {
        warnings.push(Finding {
            kind: FindingKind::NoAnchors,
            file: Some(ANCHORS_FILE.into()),
            line: None,
            seq: None,
            message: format!("no anchors in {ANCHORS_FILE}: a cut-off tail cannot be detected"),
        });
    }

    let mut torn: Vec<String> = std::fs::read_dir(dir)
        .map_err(io_err("cannot list audit directory", dir))?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains(".torn"))
        .collect();
    torn.sort();
    for t in torn {
        warnings.push(Finding {
            kind: FindingKind::TornEvidence,
            file: Some(t.clone()),
            line: None,
            seq: None,
            message: format!(
                "{t} holds bytes of a record torn by a crash, cut off the log at restart"
            ),
        });
    }

    let mut findings: Vec<(Loc, Finding)> = Vec::new();
    for issue in walk.issues.iter().flatten() {
        let (loc, finding) = match issue {
            Issue::Plain {
                kind,
                loc,
                seq,
                message,
            } => (
                *loc,
                Finding {
                    kind: *kind,
                    file: names.get(loc.file).cloned(),
                    line: names.get(loc.file).map(|_| loc.line),
                    seq: *seq,
                    message: message.clone(),
                },
            ),
            Issue::Gap {
                after,
                after_seq,
                at,
                at_seq,
                missing,
            } => {
                let ranges: Vec<String> = missing
                    .iter()
                    .map(|&(a, b)| {
                        if a == b {
                            a.to_string()
                        } else {
                            format!("{a}..={b}")
                        }
                    })
                    .collect();
                let boundary = after.is_none_or(|a| a.file != at.file) && at.line == 1;
                let from_day = after
                    .and_then(|a| files.get(a.file))
                    .map(|(d, _)| d.as_str());
                let to_day = files.get(at.file).map(|(d, _)| d.as_str());
                let missing_days = match (from_day, to_day) {
                    (Some(a), Some(b)) if boundary => days_between(a, b),
                    _ => Vec::new(),
                };
                let kind = if boundary && (!missing_days.is_empty() || after.is_none()) {
                    FindingKind::DeletedFile
                } else {
                    FindingKind::Deleted
                };
                let mut message = format!(
                    "seq {} missing between seq {after_seq} at {} and seq {at_seq} at {}",
                    ranges.join(", "),
                    walk.at_opt(*after),
                    walk.at(*at)
                );
                if !missing_days.is_empty() {
                    message.push_str(&format!(
                        "; no file for {}: day file(s) deleted",
                        missing_days
                            .iter()
                            .map(|d| format!("{d}.log"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                } else if boundary && after.is_none() {
                    message.push_str("; the oldest day file(s) were deleted");
                }
                (
                    *at,
                    Finding {
                        kind,
                        file: names.get(at.file).cloned(),
                        line: Some(at.line),
                        seq: missing.first().map(|m| m.0),
                        message,
                    },
                )
            }
        };
        findings.push((loc, finding));
    }
    findings.sort_by_key(|(loc, _)| *loc);
    let findings: Vec<Finding> = findings.into_iter().map(|(_, f)| f).collect();
    Ok(Report {
        dir: dir.to_path_buf(),
        intact: findings.is_empty(),
        records,
        last_seq: head.seq,
        last_hash: record::hex(&head.hash),
        anchors: walk.anchors.len() as u64,
        files: summaries,
        findings,
        warnings,
    })
}

/// Days strictly between two `YYYY-MM-DD` days.
fn days_between(a: &str, b: &str) -> Vec<String> {
    let parse = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").ok();
    let (Some(mut d), Some(end)) = (parse(a), parse(b)) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    while let Some(next) = d.succ_opt() {
        if next >= end || out.len() >= 366 {
            break;
        }
        out.push(next.format("%Y-%m-%d").to_string());
        d = next;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{seal, Entry, Record};
    use palisade_wire::Timestamp;

    fn entry(n: u64) -> Entry {
        Entry {
            identity: format!("user-{n}"),
            role: "analyst".into(),
            peer: "127.0.0.1:5000".into(),
            method: "GET".into(),
            path: "/v1/events".into(),
            action: serde_json::Value::Null,
            result: 200,
        }
    }

    /// A chain of `per_day` records on each of `days`, anchored every `anchor_every` records.
    /// Returns each file's lines (with newline).
    fn build(dir: &Path, days: &[&str], per_day: u64, anchor_every: u64) -> Vec<Vec<Vec<u8>>> {
        let mut prev = GENESIS;
        let mut seq = 0;
        let mut files = Vec::new();
        let mut anchors = Vec::new();
        for day in days {
            let noon: Timestamp = format!("{day}T12:00:00Z").parse().unwrap();
            let mut lines = Vec::new();
            for i in 0..per_day {
                seq += 1;
                let (rec, line) = seal(&entry(seq), seq, Timestamp(noon.0 + i as i64), &prev);
                prev = record::unhex32(&rec.hash).unwrap();
                lines.push(line);
                if seq % anchor_every == 0 {
                    let a = Anchor {
                        seq,
                        hash: rec.hash.clone(),
                        time: rec.time,
                    };
                    anchors.extend(serde_json::to_vec(&a).unwrap());
                    anchors.push(b'\n');
                }
            }
            files.push(lines);
        }
        for (day, lines) in days.iter().zip(&files) {
            std::fs::write(dir.join(format!("{day}.log")), lines.concat()).unwrap();
        }
        std::fs::write(dir.join(ANCHORS_FILE), anchors).unwrap();
        files
    }

    fn rewrite(dir: &Path, day: &str, lines: &[Vec<u8>]) {
        std::fs::write(dir.join(format!("{day}.log")), lines.concat()).unwrap();
    }

    fn only(report: &Report) -> &Finding {
        assert_eq!(report.findings.len(), 1, "{:#?}", report.findings);
        assert!(!report.intact);
        &report.findings[0]
    }

    fn at(f: &Finding, kind: FindingKind, file: &str, line: u64, seq: u64) {
        assert_eq!(f.kind, kind, "{f:#?}");
        assert_eq!(f.file.as_deref(), Some(file), "{f:#?}");
        assert_eq!(f.line, Some(line), "{f:#?}");
        assert_eq!(f.seq, Some(seq), "{f:#?}");
    }

    const D1: &str = "2026-03-01";
    const D2: &str = "2026-03-02";
    const D3: &str = "2026-03-03";

    #[test]
    fn an_untouched_chain_is_intact() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), &[D1, D2], 10, 5);
        let r = verify(dir.path()).unwrap();
        assert!(r.intact, "{r:#?}");
        assert!(r.warnings.is_empty(), "{r:#?}");
        assert_eq!((r.records, r.last_seq, r.anchors), (20, 20, 4));
        assert_eq!(r.files[1].first_seq, Some(11));
    }

    #[test]
    fn an_edited_byte_is_reported_at_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1, D2], 10, 5);
        let line = &mut files[1][3]; // seq 14, line 4 of D2
        let pos = line.windows(7).position(|w| w == b"user-14").unwrap();
        line[pos + 5] = b'9';
        rewrite(dir.path(), D2, &files[1]);
        let r = verify(dir.path()).unwrap();
        at(only(&r), FindingKind::Edited, "2026-03-02.log", 4, 14);
    }

    #[test]
    fn a_deleted_line_is_a_seq_gap() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 10, 100);
        files[0].remove(4); // seq 5
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        let f = only(&r);
        // Seq 5 is missing; line 5 now holds seq 6.
        at(f, FindingKind::Deleted, "2026-03-01.log", 5, 5);
        assert!(f.message.contains("seq 5 missing"), "{}", f.message);
    }

    #[test]
    fn an_inserted_line_with_a_recomputed_hash_is_found() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 10, 100);
        // Forge seq 5 after the real seq 4, properly hashed, claiming someone else did it.
        let real4: Record = serde_json::from_slice(&files[0][3]).unwrap();
        let prev = record::unhex32(&real4.hash).unwrap();
        let mut forged = entry(5);
        forged.identity = "someone-else".into();
        let (_, line) = seal(&forged, 5, Timestamp(real4.time.0 + 1), &prev);
        files[0].insert(4, line);
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        at(only(&r), FindingKind::Inserted, "2026-03-01.log", 5, 5);
    }

    #[test]
    fn an_inserted_line_without_a_valid_hash_is_inserted_not_edited() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 10, 100);
        let mut copy = files[0][6].clone();
        let pos = copy.windows(6).position(|w| w == b"user-7").unwrap();
        copy[pos] = b'U';
        files[0].insert(2, copy);
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        at(only(&r), FindingKind::Inserted, "2026-03-01.log", 3, 7);
    }

    #[test]
    fn swapped_lines_are_reordered() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 10, 100);
        files[0].swap(4, 5); // seq 6 now on line 5, seq 5 on line 6
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        let f = only(&r);
        at(f, FindingKind::Reordered, "2026-03-01.log", 6, 5);
        assert!(f.message.contains("after seq 6"), "{}", f.message);
    }

    #[test]
    fn a_record_moved_further_is_reordered() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 10, 100);
        let moved = files[0].remove(2); // seq 3
        files[0].insert(6, moved); // after seq 7
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        at(only(&r), FindingKind::Reordered, "2026-03-01.log", 7, 3);
    }

    #[test]
    fn a_tail_cut_after_an_anchor_is_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 20, 10);
        files[0].truncate(15);
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        let f = only(&r);
        at(f, FindingKind::Truncated, "2026-03-01.log", 15, 16);
        assert!(f.message.contains("seq 20"), "{}", f.message);
    }

    #[test]
    fn a_deleted_day_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), &[D1, D2, D3], 5, 100);
        std::fs::remove_file(dir.path().join("2026-03-02.log")).unwrap();
        let r = verify(dir.path()).unwrap();
        let f = only(&r);
        at(f, FindingKind::DeletedFile, "2026-03-03.log", 1, 6);
        assert!(f.message.contains("2026-03-02.log"), "{}", f.message);
        assert!(f.message.contains("6..=10"), "{}", f.message);
    }

    #[test]
    fn a_deleted_last_day_file_is_caught_by_the_anchors() {
        let dir = tempfile::tempdir().unwrap();
        build(dir.path(), &[D1, D2], 10, 5);
        std::fs::remove_file(dir.path().join("2026-03-02.log")).unwrap();
        let r = verify(dir.path()).unwrap();
        at(only(&r), FindingKind::Truncated, "2026-03-01.log", 10, 11);
    }

    #[test]
    fn a_rewritten_record_with_a_recomputed_hash_breaks_the_next_link() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 10, 100);
        let real4: Record = serde_json::from_slice(&files[0][3]).unwrap();
        let real3: Record = serde_json::from_slice(&files[0][2]).unwrap();
        let mut e = entry(4);
        e.result = 403;
        let (_, line) = seal(&e, 4, real4.time, &record::unhex32(&real3.hash).unwrap());
        files[0][3] = line;
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        at(only(&r), FindingKind::ChainBroken, "2026-03-01.log", 5, 5);
    }

    #[test]
    fn garbage_lines_and_torn_tails_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = build(dir.path(), &[D1], 4, 100);
        files[0].insert(2, b"not a record\n".to_vec());
        files[0].push(b"{\"seq\":5,\"ti".to_vec());
        rewrite(dir.path(), D1, &files[0]);
        let r = verify(dir.path()).unwrap();
        let f = only(&r);
        assert_eq!((f.kind, f.line), (FindingKind::Unparseable, Some(3)));
        assert_eq!(r.warnings[0].kind, FindingKind::TornTail);
        assert_eq!(r.warnings[0].line, Some(6));
    }
}
