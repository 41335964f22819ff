//! Indicators of compromise from plain-text lists: IP addresses and CIDR blocks, domains, TLS
//! server names, JA3 and JA4 fingerprints, matched against every packet's addresses, DNS
//! question names, HTTP `Host`, TLS SNI and ClientHello fingerprints.
//!
//! The lists live in one directory (default `signatures/net/`, see its `README.md`): `ip.txt`,
//! `domain.txt`, `sni.txt`, `ja3.txt`, `ja4.txt`, one entry per line, `#` comments, an optional
//! ` # description` after the value. A missing file is an empty list; a malformed line is an error
//! naming `file:line`, and the lists that were active stay active.
//!
//! Reloading stays off the packet path: a `notify` watcher feeds a reload thread, which parses the
//! lists into a fresh [`Matcher`] and publishes it; the detector only compares an atomic
//! generation counter per packet and swaps its `Arc<Matcher>` when the counter moves.
//!
//! Look-ups are hash probes: IPs by longest prefix (one probe per prefix length present in the
//! list, at most 33 for IPv4 and 129 for IPv6, whatever the list size), names by walking the
//! name's suffixes at label boundaries (a domain entry matches itself and every subdomain).

use std::borrow::Cow;
use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use palisade_wire::{Event, Severity};
use rustc_hash::FxBuildHasher;
use serde::Deserialize;
use serde_json::json;

use super::{AlertBuilder, Detector};
use crate::packet::PacketMeta;
use crate::watch::Reloadable;

const NANOS_PER_SEC: i64 = 1_000_000_000;

/// Configuration of the [`IocDetector`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IocConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Directory holding `ip.txt`, `domain.txt`, `sni.txt`, `ja3.txt` and `ja4.txt`. A relative
    /// path is taken from the agent's working directory. Default `signatures/net`, the set
    /// shipped in the repository.
    pub dir: PathBuf,
    /// Watch `dir` and reload the lists when a file changes, without a restart. Default true.
    pub watch: bool,
    /// After a change, wait until no further change has arrived for this long before reloading,
    /// so an editor's or a sync tool's burst of writes loads once. Default 500 ms.
    pub reload_debounce_ms: u64,
    /// The same list entry seen between the same two addresses alerts at most once in this
    /// interval. Default 300 s: a beaconing implant would otherwise raise an alert per packet.
    pub alert_interval_secs: u64,
    /// Rate-limit entries kept at once. Default 65 536; when full, the oldest eighth is evicted
    /// (counted in `evictions`).
    pub max_alert_keys: usize,
    /// Entries accepted per list file; a longer list is an error rather than unbounded memory.
    /// Default 1 000 000 (a few hundred MB at most; commercial feeds are far smaller).
    pub max_entries_per_list: usize,
}

impl Default for IocConfig {
    fn default() -> Self {
        IocConfig {
            enabled: true,
            dir: PathBuf::from("signatures/net"),
            watch: true,
            reload_debounce_ms: 500,
            alert_interval_secs: 300,
            max_alert_keys: 65_536,
            max_entries_per_list: 1_000_000,
        }
    }
}

/// Why the IOC lists could not be loaded or watched.
#[derive(Debug, thiserror::Error)]
pub enum IocError {
    /// The list directory is missing or not a directory.
    #[error("IOC list directory {path} does not exist or is not a directory")]
    NoDir {
        /// The configured directory.
        path: PathBuf,
    },
    /// A list file exists but could not be read.
    #[error("cannot read IOC list {path}: {source}")]
    Read {
        /// The list file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// A line of a list is not a valid entry.
    #[error("{path}:{line}: {reason}")]
    BadEntry {
        /// The list file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A list has more entries than `max_entries_per_list`.
    #[error("{path}: more than {max} entries (raise max_entries_per_list)")]
    TooManyEntries {
        /// The list file.
        path: PathBuf,
        /// The configured cap.
        max: usize,
    },
    /// The change watcher or the reload thread could not be set up.
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    /// A config value is out of range.
    #[error("invalid ioc detector config: {field} {reason}")]
    InvalidConfig {
        /// The offending option.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The five lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListKind {
    /// `ip.txt`: IPv4/IPv6 addresses and CIDR blocks.
    Ip,
    /// `domain.txt`: domains, matching themselves and their subdomains.
    Domain,
    /// `sni.txt`: TLS server names, matching themselves and their subdomains.
    Sni,
    /// `ja3.txt`: JA3 ClientHello hashes (32 hex digits).
    Ja3,
    /// `ja4.txt`: JA4 ClientHello fingerprints.
    Ja4,
}

impl ListKind {
    /// Every list.
    pub const ALL: [ListKind; 5] = [
        ListKind::Ip,
        ListKind::Domain,
        ListKind::Sni,
        ListKind::Ja3,
        ListKind::Ja4,
    ];

    /// The list's file name in the directory.
    pub fn file_name(self) -> &'static str {
        match self {
            ListKind::Ip => "ip.txt",
            ListKind::Domain => "domain.txt",
            ListKind::Sni => "sni.txt",
            ListKind::Ja3 => "ja3.txt",
            ListKind::Ja4 => "ja4.txt",
        }
    }

    /// The indicator type named in evidence.
    pub fn indicator_type(self) -> &'static str {
        match self {
            ListKind::Ip => "ip",
            ListKind::Domain => "domain",
            ListKind::Sni => "sni",
            ListKind::Ja3 => "ja3",
            ListKind::Ja4 => "ja4",
        }
    }

    fn rule_id(self) -> &'static str {
        match self {
            ListKind::Ip => "palisade.net.ioc.ip",
            ListKind::Domain => "palisade.net.ioc.domain",
            ListKind::Sni => "palisade.net.ioc.sni",
            ListKind::Ja3 => "palisade.net.ioc.ja3",
            ListKind::Ja4 => "palisade.net.ioc.ja4",
        }
    }

    fn rule_name(self) -> &'static str {
        match self {
            ListKind::Ip => "Traffic with a listed IP address",
            ListKind::Domain => "Listed domain in DNS or HTTP",
            ListKind::Sni => "Listed TLS server name",
            ListKind::Ja3 => "Listed JA3 TLS client fingerprint",
            ListKind::Ja4 => "Listed JA4 TLS client fingerprint",
        }
    }

    /// Parses one value of this list into its normalized form.
    fn normalize(self, value: &str) -> Result<String, String> {
        match self {
            ListKind::Ip => parse_cidr(value).map(|(addr, len)| {
                if len == max_prefix(addr) {
                    addr.to_string()
                } else {
                    format!("{addr}/{len}")
                }
            }),
            ListKind::Domain | ListKind::Sni => normalize_domain(value),
            ListKind::Ja3 => {
                if value.len() == 32 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
                    Ok(value.to_ascii_lowercase())
                } else {
                    Err(format!("{value:?} is not a JA3 hash (32 hex digits)"))
                }
            }
            ListKind::Ja4 => normalize_ja4(value),
        }
    }
}

/// One list entry, as the operator wrote it (normalized) with its description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListEntry {
    /// The normalized value (`203.0.113.0/24`, `c2.example.net`, …).
    pub value: String,
    /// The text after ` # `, if any.
    pub description: Option<String>,
    /// 1-based line in the list file.
    pub line: usize,
}

/// A map keyed by list entries. FxHash instead of the keyed std hasher: the contents are the
/// operator's lists, and lookups with attacker-chosen keys can neither grow the table nor
/// lengthen its probe chains, while every packet pays for two address lookups per prefix length.
type ListMap<K> = HashMap<K, ListEntry, FxBuildHasher>;

/// IPs and CIDR blocks, looked up by longest prefix.
#[derive(Debug, Default)]
struct IpSet {
    /// Per prefix length present, longest first: network address → entry.
    v4: Vec<(u8, ListMap<u32>)>,
    v6: Vec<(u8, ListMap<u128>)>,
    /// One bit per IPv4 /16 that any entry overlaps (empty when there are no IPv4 entries):
    /// most addresses are ruled out by one bit test instead of a lookup per prefix length.
    v4_slash16: Vec<u64>,
}

impl IpSet {
    fn lookup(&self, ip: IpAddr) -> Option<&ListEntry> {
        let ip = match ip {
            // An IPv4-mapped IPv6 address is the IPv4 host.
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match ip {
            IpAddr::V4(a) => {
                let a = u32::from(a);
                let slash16 = (a >> 16) as usize;
                let word = self.v4_slash16.get(slash16 / 64).copied().unwrap_or(0);
                if word & (1 << (slash16 % 64)) == 0 {
                    return None;
                }
                self.v4
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v4(a, *len)))
            }
            IpAddr::V6(a) => {
                let a = u128::from(a);
                self.v6
                    .iter()
                    .find_map(|(len, map)| map.get(&mask_v6(a, *len)))
            }
        }
    }

    /// Sets `v4_slash16` from `v4`.
    fn index_v4(&mut self) {
        self.v4_slash16.clear();
        if self.v4.is_empty() {
            return;
        }
        self.v4_slash16.resize(65_536 / 64, 0);
        for (len, map) in &self.v4 {
            // A prefix shorter than 16 bits spans 2^(16 - len) consecutive /16s.
            let span = 1usize << 16u8.saturating_sub(*len);
            for network in map.keys() {
                let first = (network >> 16) as usize;
                for slash16 in first..(first + span).min(65_536) {
                    if let Some(word) = self.v4_slash16.get_mut(slash16 / 64) {
                        *word |= 1 << (slash16 % 64);
                    }
                }
            }
        }
    }

    fn len(&self) -> usize {
        self.v4.iter().map(|(_, m)| m.len()).sum::<usize>()
            + self.v6.iter().map(|(_, m)| m.len()).sum::<usize>()
    }
}

fn mask_v4(a: u32, len: u8) -> u32 {
    a & u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0)
}

fn mask_v6(a: u128, len: u8) -> u128 {
    a & u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

fn max_prefix(addr: IpAddr) -> u8 {
    if addr.is_ipv4() {
        32
    } else {
        128
    }
}

/// `ADDR` or `ADDR/LEN` with no host bits set.
fn parse_cidr(value: &str) -> Result<(IpAddr, u8), String> {
    let (addr, len) = match value.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (value, None),
    };
    let addr: IpAddr = addr
        .parse()
        .map_err(|_| format!("{value:?} is not an IP address or CIDR block"))?;
    let max = max_prefix(addr);
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{value:?}: prefix length must be 0 to {max}"))?,
    };
    let host_bits_set = match addr {
        IpAddr::V4(a) => mask_v4(u32::from(a), len) != u32::from(a),
        IpAddr::V6(a) => mask_v6(u128::from(a), len) != u128::from(a),
    };
    if host_bits_set {
        let network = match addr {
            IpAddr::V4(a) => IpAddr::V4(mask_v4(u32::from(a), len).into()),
            IpAddr::V6(a) => IpAddr::V6(mask_v6(u128::from(a), len).into()),
        };
        return Err(format!(
            "{value:?} has host bits set; did you mean {network}/{len}?"
        ));
    }
    Ok((addr, len))
}

/// Lowercase, no trailing dot, DNS label syntax (letters, digits, `-`, `_`).
fn normalize_domain(value: &str) -> Result<String, String> {
    let name = value.trim_end_matches('.').to_ascii_lowercase();
    if name.starts_with("*.") {
        return Err(format!(
            "{value:?}: drop the \"*.\"; an entry already matches all its subdomains"
        ));
    }
    if name.parse::<IpAddr>().is_ok() {
        return Err(format!("{value:?} is an IP address; put it in ip.txt"));
    }
    if name.is_empty() || name.len() > 253 {
        return Err(format!("{value:?} is not a domain name (1 to 253 bytes)"));
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!(
                "{value:?} is not a domain name (empty or over-long label)"
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(format!(
                "{value:?} is not a domain name (letters, digits, '-' and '_' only; write IDNs as xn--)"
            ));
        }
    }
    Ok(name)
}

/// A JA4 fingerprint: `a_b_c`, `a` 10 characters (`t`/`q`/`d`, version, `d`/`i`, two 2-digit
/// counts, ALPN), `b` and `c` 12 hex digits each.
fn normalize_ja4(value: &str) -> Result<String, String> {
    let v = value.to_ascii_lowercase();
    let bad = || {
        Err(format!(
            "{value:?} is not a JA4 fingerprint (like t13d1516h2_8daaf6152771_b186095e22b6)"
        ))
    };
    let mut parts = v.split('_');
    let (Some(a), Some(b), Some(c), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad();
    };
    let a_ok = a.len() == 10
        && a.is_ascii()
        && matches!(a.as_bytes().first(), Some(b't' | b'q' | b'd'))
        && matches!(a.as_bytes().get(3), Some(b'd' | b'i'))
        && a.get(4..8)
            .is_some_and(|n| n.bytes().all(|d| d.is_ascii_digit()))
        && a.bytes().all(|ch| ch.is_ascii_alphanumeric());
    let hex12 = |s: &str| s.len() == 12 && s.bytes().all(|ch| ch.is_ascii_hexdigit());
    if a_ok && hex12(b) && hex12(c) {
        Ok(v)
    } else {
        bad()
    }
}

/// Domain names with the subdomain rule.
#[derive(Debug, Default)]
struct DomainSet {
    names: ListMap<String>,
}

impl DomainSet {
    fn lookup(&self, name: &str) -> Option<&ListEntry> {
        if self.names.is_empty() {
            return None;
        }
        let name = name.trim_end_matches('.');
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            Cow::Owned(name.to_ascii_lowercase())
        } else {
            Cow::Borrowed(name)
        };
        std::iter::once(name.as_ref())
            .chain(
                name.match_indices('.')
                    .filter_map(|(i, _)| name.get(i + 1..)),
            )
            .find_map(|suffix| self.names.get(suffix))
    }
}

/// The compiled lists. Immutable once built; replaced whole on reload.
#[derive(Debug, Default)]
pub struct Matcher {
    ip: IpSet,
    domain: DomainSet,
    sni: DomainSet,
    ja3: HashMap<String, ListEntry>,
    ja4: HashMap<String, ListEntry>,
}

impl Matcher {
    /// Reads and compiles every list in `dir`. A missing list file is an empty list.
    pub fn load(dir: &Path, max_entries_per_list: usize) -> Result<Self, IocError> {
        if !dir.is_dir() {
            return Err(IocError::NoDir {
                path: dir.to_path_buf(),
            });
        }
        let mut m = Matcher::default();
        for kind in ListKind::ALL {
            let path = dir.join(kind.file_name());
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(source) => return Err(IocError::Read { path, source }),
            };
            m.add_list(kind, &path, &text, max_entries_per_list)?;
        }
        Ok(m)
    }

    /// Parses one list's text (`path` only names it in errors) into this matcher.
    pub fn add_list(
        &mut self,
        kind: ListKind,
        path: &Path,
        text: &str,
        max_entries: usize,
    ) -> Result<(), IocError> {
        let mut v4: BTreeMap<u8, ListMap<u32>> = BTreeMap::new();
        let mut v6: BTreeMap<u8, ListMap<u128>> = BTreeMap::new();
        let mut count = 0usize;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let bad = |reason: String| IocError::BadEntry {
                path: path.to_path_buf(),
                line,
                reason,
            };
            let Some((value, description)) = split_line(raw).map_err(bad)? else {
                continue;
            };
            let normalized = kind.normalize(value).map_err(bad)?;
            count += 1;
            if count > max_entries {
                return Err(IocError::TooManyEntries {
                    path: path.to_path_buf(),
                    max: max_entries,
                });
            }
            let entry = ListEntry {
                value: normalized.clone(),
                description: description.map(str::to_string),
                line,
            };
            // A duplicate keeps the first entry (its line and description).
            match kind {
                ListKind::Ip => match parse_cidr(value).map_err(bad)? {
                    (IpAddr::V4(a), len) => {
                        v4.entry(len)
                            .or_default()
                            .entry(u32::from(a))
                            .or_insert(entry);
                    }
                    (IpAddr::V6(a), len) => {
                        v6.entry(len)
                            .or_default()
                            .entry(u128::from(a))
                            .or_insert(entry);
                    }
                },
                ListKind::Domain => {
                    self.domain.names.entry(normalized).or_insert(entry);
                }
                ListKind::Sni => {
                    self.sni.names.entry(normalized).or_insert(entry);
                }
                ListKind::Ja3 => {
                    self.ja3.entry(normalized).or_insert(entry);
                }
                ListKind::Ja4 => {
                    self.ja4.entry(normalized).or_insert(entry);
                }
            }
        }
        if kind == ListKind::Ip {
            self.ip.v4 = v4.into_iter().rev().collect();
            self.ip.v6 = v6.into_iter().rev().collect();
            self.ip.index_v4();
        }
        Ok(())
    }

    /// The entry of `ip.txt` that covers `ip` (longest prefix).
    pub fn match_ip(&self, ip: IpAddr) -> Option<&ListEntry> {
        self.ip.lookup(ip)
    }

    /// The entry of `domain.txt` equal to `name` or a parent of it.
    pub fn match_domain(&self, name: &str) -> Option<&ListEntry> {
        self.domain.lookup(name)
    }

    /// The entry of `sni.txt` equal to `name` or a parent of it.
    pub fn match_sni(&self, name: &str) -> Option<&ListEntry> {
        self.sni.lookup(name)
    }

    /// The entry of `ja3.txt` equal to `hash`.
    pub fn match_ja3(&self, hash: &str) -> Option<&ListEntry> {
        lookup_lowercase(&self.ja3, hash)
    }

    /// The entry of `ja4.txt` equal to `fingerprint`.
    pub fn match_ja4(&self, fingerprint: &str) -> Option<&ListEntry> {
        lookup_lowercase(&self.ja4, fingerprint)
    }

    /// Entries in all lists.
    pub fn len(&self) -> usize {
        self.ip.len()
            + self.domain.names.len()
            + self.sni.names.len()
            + self.ja3.len()
            + self.ja4.len()
    }

    /// Whether every list is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn lookup_lowercase<'m>(map: &'m HashMap<String, ListEntry>, key: &str) -> Option<&'m ListEntry> {
    if map.is_empty() {
        return None;
    }
    if key.bytes().any(|b| b.is_ascii_uppercase()) {
        map.get(&key.to_ascii_lowercase())
    } else {
        map.get(key)
    }
}

/// `VALUE`, `VALUE # description`, or nothing for blank and comment lines.
fn split_line(raw: &str) -> Result<Option<(&str, Option<&str>)>, String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (value, rest) = match line.split_once(char::is_whitespace) {
        Some((v, rest)) => (v, rest.trim_start()),
        None => (line, ""),
    };
    if rest.is_empty() {
        return Ok(Some((value, None)));
    }
    match rest.strip_prefix('#') {
        Some(d) => {
            let d = d.trim();
            Ok(Some((value, (!d.is_empty()).then_some(d))))
        }
        None => Err(format!(
            "unexpected {rest:?} after the value; one value per line, a description starts with '#'"
        )),
    }
}

/// One list hit found on a packet, before rate-limiting.
#[derive(Debug)]
struct Hit {
    kind: ListKind,
    /// The ECS field the value came from.
    field: &'static str,
    observed: String,
    entry: ListEntry,
}

/// Matches packets against the IOC lists; see the module docs.
#[derive(Debug)]
pub struct IocDetector {
    config: IocConfig,
    agent_id: String,
    matcher: Arc<Matcher>,
    /// Background reloads (and their counters); dropping it stops the watcher.
    lists: Reloadable<Matcher>,
    hasher: RandomState,
    last_alert: HashMap<u64, i64>,
    evictions: u64,
}

impl IocDetector {
    /// Loads the lists from `config.dir` and, with `config.watch`, starts watching it.
    pub fn new(config: IocConfig, agent_id: &str) -> Result<Self, IocError> {
        if config.max_alert_keys == 0 {
            return Err(IocError::InvalidConfig {
                field: "max_alert_keys",
                reason: "must be at least 1",
            });
        }
        if config.max_entries_per_list == 0 {
            return Err(IocError::InvalidConfig {
                field: "max_entries_per_list",
                reason: "must be at least 1",
            });
        }
        let matcher = Matcher::load(&config.dir, config.max_entries_per_list)?;
        tracing::info!(dir = %config.dir.display(), entries = matcher.len(), "IOC lists loaded");
        let lists = if config.enabled && config.watch {
            let (dir, max) = (config.dir.clone(), config.max_entries_per_list);
            Reloadable::watch(
                &config.dir,
                "ioc-reload",
                "IOC lists",
                Duration::from_millis(config.reload_debounce_ms),
                is_list_file,
                move || Matcher::load(&dir, max),
            )?
        } else {
            Reloadable::unwatched()
        };
        Ok(IocDetector {
            config,
            agent_id: agent_id.to_string(),
            matcher: Arc::new(matcher),
            lists,
            hasher: RandomState::new(),
            last_alert: HashMap::new(),
            evictions: 0,
        })
    }

    /// Re-reads the lists now. On error the active lists stay in force.
    pub fn reload(&mut self) -> Result<(), IocError> {
        match Matcher::load(&self.config.dir, self.config.max_entries_per_list) {
            Ok(m) => {
                self.lists.publish(m);
                self.refresh();
                Ok(())
            }
            Err(e) => {
                self.lists.record_failure(e.to_string());
                Err(e)
            }
        }
    }

    /// The lists in force.
    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    /// Successful reloads since start (background and [`IocDetector::reload`]).
    pub fn reloads(&self) -> u64 {
        self.lists.reloads()
    }

    /// Failed reloads since start; each left the previous lists active.
    pub fn reload_failures(&self) -> u64 {
        self.lists.failures()
    }

    /// The error of the last failed reload, for status output.
    pub fn last_reload_error(&self) -> Option<String> {
        self.lists.last_error()
    }

    /// Takes a matcher the reload thread published, if any. One atomic load when there is none.
    fn refresh(&mut self) {
        if let Some(m) = self.lists.take_update() {
            self.matcher = m;
        }
    }

    fn hits(&self, p: &PacketMeta<'_>) -> Vec<Hit> {
        let m = &self.matcher;
        let mut hits = Vec::new();
        let mut push = |kind, field, observed: &str, entry: Option<&ListEntry>| {
            if let Some(entry) = entry {
                hits.push(Hit {
                    kind,
                    field,
                    observed: observed.to_string(),
                    entry: entry.clone(),
                });
            }
        };
        for (field, ip) in [("source.ip", p.src_ip), ("destination.ip", p.dst_ip)] {
            // Formatting the address only on a hit keeps the miss path allocation-free.
            if let Some((ip, entry)) = ip.and_then(|ip| Some((ip, m.match_ip(ip)?))) {
                push(ListKind::Ip, field, &ip.to_string(), Some(entry));
            }
        }
        for q in &p.app.dns_questions {
            push(
                ListKind::Domain,
                "dns.question.name",
                &q.name,
                m.match_domain(&q.name),
            );
        }
        if let Some(host) = p.app.http_host {
            let host = strip_port(host);
            push(ListKind::Domain, "url.domain", host, m.match_domain(host));
        }
        if let Some(sni) = p.app.tls_sni.as_deref() {
            // A listed domain is as bad in a ClientHello as in DNS; sni.txt adds names that are
            // only meaningful there (fronted or SNI-routed C2).
            push(
                ListKind::Sni,
                "tls.client.server_name",
                sni,
                m.match_sni(sni),
            );
            push(
                ListKind::Domain,
                "tls.client.server_name",
                sni,
                m.match_domain(sni),
            );
        }
        if let Some(ja3) = p.app.tls_ja3.as_deref() {
            push(ListKind::Ja3, "tls.client.ja3", ja3, m.match_ja3(ja3));
        }
        if let Some(ja4) = p.app.tls_ja4.as_deref() {
            push(ListKind::Ja4, "tls.client.ja4", ja4, m.match_ja4(ja4));
        }
        hits
    }

    /// Whether this hit may alert now (once per entry, observed value and address pair per
    /// interval, both directions alike); records it if so.
    fn may_alert(&mut self, hit: &Hit, p: &PacketMeta<'_>) -> bool {
        let pair = if p.src_ip <= p.dst_ip {
            (p.src_ip, p.dst_ip)
        } else {
            (p.dst_ip, p.src_ip)
        };
        let key = self
            .hasher
            .hash_one((hit.kind, &hit.entry.value, &hit.observed, pair));
        let interval = i64::try_from(self.config.alert_interval_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_SEC);
        match self.last_alert.get(&key) {
            Some(&last) if p.ts.saturating_sub(last) < interval => return false,
            Some(_) => {}
            None if self.last_alert.len() >= self.config.max_alert_keys => self.evict_oldest(),
            None => {}
        }
        self.last_alert.insert(key, p.ts);
        true
    }

    fn evict_oldest(&mut self) {
        let mut times: Vec<i64> = self.last_alert.values().copied().collect();
        let k = (times.len() / 8).max(1);
        let (_, cutoff, _) = times.select_nth_unstable(k - 1);
        let cutoff = *cutoff;
        let before = self.last_alert.len();
        self.last_alert.retain(|_, t| *t > cutoff);
        self.evictions += (before - self.last_alert.len()) as u64;
    }
}

impl Detector for IocDetector {
    fn name(&self) -> &'static str {
        "ioc"
    }

    fn on_packet(&mut self, packet: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled {
            return;
        }
        self.refresh();
        let hits = self.hits(packet);
        for hit in hits {
            if !self.may_alert(&hit, packet) {
                continue;
            }
            let list = hit.kind.file_name();
            let description = hit.entry.description.as_deref().unwrap_or("no description");
            let message = format!(
                "{} {} matches IOC {} ({list}:{}: {description})",
                hit.field, hit.observed, hit.entry.value, hit.entry.line
            );
            let evidence = json!({
                "list": list,
                "indicator_type": hit.kind.indicator_type(),
                "field": hit.field,
                "matched": hit.observed,
                "entry": hit.entry.value,
                "description": hit.entry.description,
                "line": hit.entry.line,
            });
            out.push(
                AlertBuilder::new(
                    &self.agent_id,
                    packet.ts,
                    hit.kind.rule_id(),
                    hit.kind.rule_name(),
                    Severity::High,
                )
                .flow_of(packet)
                .finish(message, evidence),
            );
        }
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        self.refresh();
        let interval = i64::try_from(self.config.alert_interval_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_SEC);
        self.last_alert
            .retain(|_, t| now.saturating_sub(*t) < interval);
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// `host:port` → `host`; IPv6 literals and bare hosts unchanged.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((h, port))
            if !h.contains(':') && !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            h
        }
        _ => host,
    }
}

fn is_list_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| ListKind::ALL.iter().any(|k| k.file_name() == n))
}

/// Entry point for the `ioc_lists` fuzz target.
#[doc(hidden)]
pub mod fuzzing {
    use super::{ListKind, Matcher};

    /// Parses `data[1..]` as the indicator list chosen by `data[0]`, then looks up the values
    /// the lists are matched against (an address, names, JA3 and JA4 strings).
    pub fn ioc_lists(data: &[u8]) {
        let Some((&selector, text)) = data.split_first() else {
            return;
        };
        let Ok(text) = std::str::from_utf8(text) else {
            return;
        };
        let kind = ListKind::ALL[usize::from(selector) % ListKind::ALL.len()];
        let mut m = Matcher::default();
        if m.add_list(kind, std::path::Path::new(kind.file_name()), text, 1_000)
            .is_ok()
        {
            let _ = m.match_ip(std::net::IpAddr::from([10, 1, 2, 3]));
            let _ = m.match_ip(std::net::IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, 1]));
            for line in text.lines().take(4) {
                let _ = m.match_domain(line);
                let _ = m.match_sni(line);
                let _ = m.match_ja3(line);
                let _ = m.match_ja4(line);
            }
            let _ = m.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::evidence;
    use crate::packet::DnsName;
    use std::net::Ipv4Addr;

    const T0: i64 = 1_717_200_000 * NANOS_PER_SEC;

    fn shipped_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../signatures/net")
    }

    fn config(dir: &Path) -> IocConfig {
        IocConfig {
            dir: dir.to_path_buf(),
            watch: false,
            ..IocConfig::default()
        }
    }

    fn base_packet() -> PacketMeta<'static> {
        let mut p = PacketMeta::empty(T0);
        p.src_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 1, 1, 1)));
        p.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 2, 2, 2)));
        p.ip_proto = crate::packet::proto::TCP;
        p.src_port = 50_000;
        p.dst_port = 443;
        p
    }

    fn write_lists(dir: &Path, files: &[(&str, &str)]) {
        for (name, text) in files {
            std::fs::write(dir.join(name), text).unwrap();
        }
    }

    /// One case of `signatures/net/tests/cases.toml`.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Case {
        field: String,
        value: String,
        expect: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Cases {
        case: Vec<Case>,
    }

    #[test]
    fn shipped_lists_pass_their_own_cases() {
        let text = std::fs::read_to_string(shipped_dir().join("tests/cases.toml")).unwrap();
        let cases: Cases = toml::from_str(&text).unwrap();
        assert!(cases.case.len() >= 10);
        let mut d = IocDetector::new(config(&shipped_dir()), "probe-1").unwrap();
        let mut failures = Vec::new();
        for (i, case) in cases.case.iter().enumerate() {
            let mut p = base_packet();
            // Each case is its own moment far apart, so rate-limiting never hides a match.
            p.ts = T0 + (i as i64) * 1_000 * NANOS_PER_SEC;
            match case.field.as_str() {
                "ip" => p.dst_ip = Some(case.value.parse().unwrap()),
                "dns" => {
                    p.app.dns_questions = vec![DnsName {
                        name: case.value.clone(),
                        rtype: 1,
                    }]
                }
                "http_host" => p.app.http_host = Some(case.value.as_str()),
                "sni" => p.app.tls_sni = Some(case.value.clone()),
                "ja3" => p.app.tls_ja3 = Some(case.value.clone()),
                "ja4" => p.app.tls_ja4 = Some(case.value.clone()),
                other => panic!("case {i}: unknown field {other:?}"),
            }
            let mut out = Vec::new();
            d.on_packet(&p, &mut out);
            let got: Vec<String> = out
                .iter()
                .map(|e| evidence(e)["entry"].as_str().unwrap().to_string())
                .collect();
            let ok = match &case.expect {
                Some(entry) => got.iter().any(|g| g == entry),
                None => got.is_empty(),
            };
            if !ok {
                failures.push(format!("{case:?} → {got:?}"));
            }
        }
        assert!(
            failures.is_empty(),
            "failing cases:\n{}",
            failures.join("\n")
        );
    }

    #[test]
    fn cidr_longest_prefix_v4_v6() {
        let mut m = Matcher::default();
        let text =
            "10.0.0.0/8 # wide\n10.9.0.0/16 # narrow\n2001:db8::/32 # doc v6\n2001:db8:1::7\n";
        m.add_list(ListKind::Ip, Path::new("ip.txt"), text, 100)
            .unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(m.match_ip(ip("10.9.1.2")).unwrap().value, "10.9.0.0/16");
        assert_eq!(m.match_ip(ip("10.8.1.2")).unwrap().value, "10.0.0.0/8");
        assert_eq!(
            m.match_ip(ip("10.8.1.2")).unwrap().description.as_deref(),
            Some("wide")
        );
        assert!(m.match_ip(ip("11.0.0.1")).is_none());
        assert_eq!(
            m.match_ip(ip("2001:db8:1::7")).unwrap().value,
            "2001:db8:1::7"
        );
        assert_eq!(
            m.match_ip(ip("2001:db8:ffff::1")).unwrap().value,
            "2001:db8::/32"
        );
        assert!(m.match_ip(ip("2001:db9::1")).is_none());
        assert_eq!(
            m.match_ip(ip("::ffff:10.9.0.1")).unwrap().value,
            "10.9.0.0/16"
        );
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn slash16_index_covers_short_and_long_prefixes() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut m = Matcher::default();
        m.add_list(
            ListKind::Ip,
            Path::new("ip.txt"),
            "172.16.0.0/12
9.8.7.6
",
            100,
        )
        .unwrap();
        for hit in ["172.16.0.1", "172.31.255.255", "9.8.7.6"] {
            assert!(m.match_ip(ip(hit)).is_some(), "{hit}");
        }
        for miss in ["172.15.255.255", "172.32.0.0", "9.8.7.7", "9.9.7.6"] {
            assert!(m.match_ip(ip(miss)).is_none(), "{miss}");
        }
        let mut all = Matcher::default();
        all.add_list(
            ListKind::Ip,
            Path::new("ip.txt"),
            "0.0.0.0/0
",
            100,
        )
        .unwrap();
        assert!(all.match_ip(ip("255.255.255.255")).is_some());
    }

    #[test]
    fn large_cidr_list_is_hash_probed() {
        // 20 000 /24s: a linear scan would be visible; here the look-up touches one map per
        // prefix length.
        let text: String = (0..20_000u32)
            .map(|i| format!("{}/24\n", Ipv4Addr::from((10 << 24) | (i << 8))))
            .collect();
        let mut m = Matcher::default();
        m.add_list(ListKind::Ip, Path::new("ip.txt"), &text, 1_000_000)
            .unwrap();
        assert_eq!(m.ip.v4.len(), 1);
        assert!(m.match_ip("10.78.31.9".parse().unwrap()).is_some());
        assert!(m.match_ip("11.0.0.1".parse().unwrap()).is_none());
    }

    #[test]
    fn domain_matches_itself_and_subdomains_only() {
        let mut m = Matcher::default();
        m.add_list(
            ListKind::Domain,
            Path::new("domain.txt"),
            "C2.Example.NET. # test C2\n",
            100,
        )
        .unwrap();
        assert!(m.match_domain("c2.example.net").is_some());
        assert!(m.match_domain("a.b.c2.example.net").is_some());
        assert!(m.match_domain("A.C2.EXAMPLE.NET.").is_some());
        assert!(m.match_domain("notc2.example.net").is_none());
        assert!(m.match_domain("example.net").is_none());
        assert!(m.match_domain("c2.example.net.evil.org").is_none());
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let cases = [
            (ListKind::Ip, "192.0.2.0/24\n\n# c\n192.0.2.300\n", 4),
            (ListKind::Ip, "192.0.2.1/24\n", 1),
            (ListKind::Ip, "192.0.2.0/33\n", 1),
            (ListKind::Domain, "ok.example\n*.bad.example\n", 2),
            (ListKind::Domain, "a..example\n", 1),
            (ListKind::Domain, "bad.example garbage\n", 1),
            (ListKind::Ja3, "xyz\n", 1),
            (ListKind::Ja4, "t13d1516h2_8daaf6152771\n", 1),
        ];
        for (kind, text, line) in cases {
            let mut m = Matcher::default();
            let err = m
                .add_list(kind, Path::new("lists/x.txt"), text, 100)
                .unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.starts_with(&format!("lists/x.txt:{line}: ")),
                "{text:?}: {msg}"
            );
        }
        let mut m = Matcher::default();
        let err = m
            .add_list(ListKind::Ja3, Path::new("ja3.txt"), "", 0)
            .map(|()| m.len());
        assert_eq!(err.unwrap(), 0);
        let err = m
            .add_list(
                ListKind::Domain,
                Path::new("domain.txt"),
                "a.example\nb.example\n",
                1,
            )
            .unwrap_err();
        assert!(matches!(err, IocError::TooManyEntries { .. }), "{err}");
    }

    #[test]
    fn reload_picks_up_changes_and_keeps_old_lists_on_error() {
        let dir = tempfile::tempdir().unwrap();
        write_lists(dir.path(), &[("domain.txt", "bad.example.org # v1\n")]);
        let mut d = IocDetector::new(config(dir.path()), "probe-1").unwrap();
        let mut p = base_packet();
        p.app.http_host = Some("www.bad.example.org:8080");
        let mut out = Vec::new();
        d.on_packet(&p, &mut out);
        assert_eq!(out.len(), 1);
        let ev = evidence(&out[0]);
        assert_eq!(ev["list"], "domain.txt");
        assert_eq!(ev["indicator_type"], "domain");
        assert_eq!(ev["matched"], "www.bad.example.org");
        assert_eq!(ev["entry"], "bad.example.org");
        assert_eq!(ev["description"], "v1");
        assert_eq!(ev["line"], 1);
        assert_eq!(out[0].event.severity, Severity::High);
        assert_eq!(
            out[0].rule.as_ref().unwrap().id.as_deref(),
            Some("palisade.net.ioc.domain")
        );

        // A broken edit: reported with file:line, the old lists stay.
        write_lists(
            dir.path(),
            &[("domain.txt", "other.example.org\nnot a domain!\n")],
        );
        let err = d.reload().unwrap_err().to_string();
        assert!(err.contains("domain.txt:2:"), "{err}");
        assert_eq!(d.reload_failures(), 1);
        assert!(d.matcher().match_domain("bad.example.org").is_some());
        assert!(d.matcher().match_domain("other.example.org").is_none());

        // A good edit replaces the lists.
        write_lists(
            dir.path(),
            &[
                ("domain.txt", "other.example.org\n"),
                ("ip.txt", "198.51.100.0/24 # doc net\n"),
            ],
        );
        d.reload().unwrap();
        assert!(d.matcher().match_domain("bad.example.org").is_none());
        assert!(d.matcher().match_domain("x.other.example.org").is_some());
        out.clear();
        let mut q = base_packet();
        q.ts = T0 + NANOS_PER_SEC;
        q.src_ip = Some("198.51.100.9".parse().unwrap());
        d.on_packet(&q, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(evidence(&out[0])["field"], "source.ip");
        assert_eq!(evidence(&out[0])["entry"], "198.51.100.0/24");
    }

    #[test]
    fn repeated_hits_are_rate_limited_per_pair() {
        let dir = tempfile::tempdir().unwrap();
        write_lists(dir.path(), &[("ip.txt", "203.0.113.0/24\n")]);
        let mut d = IocDetector::new(config(dir.path()), "probe-1").unwrap();
        let mut out = Vec::new();
        let mut p = base_packet();
        p.dst_ip = Some("203.0.113.5".parse().unwrap());
        let mut back = p.clone();
        std::mem::swap(&mut back.src_ip, &mut back.dst_ip);
        for i in 0..10 {
            p.ts = T0 + i * NANOS_PER_SEC;
            back.ts = p.ts;
            d.on_packet(&p, &mut out);
            d.on_packet(&back, &mut out);
        }
        assert_eq!(out.len(), 1);
        p.ts = T0 + 301 * NANOS_PER_SEC;
        d.on_packet(&p, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn sni_ja3_ja4_match() {
        let dir = tempfile::tempdir().unwrap();
        write_lists(
            dir.path(),
            &[
                ("sni.txt", "front.example.net # fronted\n"),
                ("ja3.txt", "0123456789ABCDEF0123456789abcdef\n"),
                ("ja4.txt", "t10i010100_0123456789ab_ba9876543210\n"),
            ],
        );
        let mut d = IocDetector::new(config(dir.path()), "probe-1").unwrap();
        let mut p = base_packet();
        p.app.tls_sni = Some("cdn.front.example.net".into());
        p.app.tls_ja3 = Some("0123456789abcdef0123456789ABCDEF".into());
        p.app.tls_ja4 = Some("t10i010100_0123456789ab_ba9876543210".into());
        let mut out = Vec::new();
        d.on_packet(&p, &mut out);
        let lists: Vec<_> = out.iter().map(|e| evidence(e)["list"].clone()).collect();
        assert_eq!(lists, vec!["sni.txt", "ja3.txt", "ja4.txt"]);
        p.app.tls_sni = Some("front.example.com".into());
        p.app.tls_ja3 = Some("ffffffffffffffffffffffffffffffff".into());
        p.app.tls_ja4 = None;
        out.clear();
        d.on_packet(&p, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn missing_dir_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = IocDetector::new(config(&dir.path().join("nope")), "p").unwrap_err();
        assert!(matches!(err, IocError::NoDir { .. }), "{err}");
    }

    #[test]
    fn config_is_strict() {
        assert!(toml::from_str::<IocConfig>("directory = \"x\"").is_err());
        let c: IocConfig = toml::from_str("dir = \"/etc/palisade/ioc\"\nwatch = false").unwrap();
        assert_eq!(c.dir, PathBuf::from("/etc/palisade/ioc"));
        assert!(c.enabled);
    }

    #[test]
    fn watcher_reloads_within_seconds() {
        let dir = tempfile::tempdir().unwrap();
        write_lists(dir.path(), &[("domain.txt", "first.example\n")]);
        let mut d = IocDetector::new(
            IocConfig {
                dir: dir.path().to_path_buf(),
                watch: true,
                reload_debounce_ms: 50,
                ..IocConfig::default()
            },
            "probe-1",
        )
        .unwrap();
        write_lists(dir.path(), &[("domain.txt", "second.example\n")]);
        let mut out = Vec::new();
        let mut p = base_packet();
        p.app.http_host = Some("second.example");
        for _ in 0..100 {
            d.on_packet(&p, &mut out);
            if !out.is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(out.len(), 1, "no reload within 5 s");
        assert!(d.reloads() >= 1);
        assert!(d.matcher().match_domain("first.example").is_none());
    }
}
