//! DNS tunnelling and DNS exfiltration: data hidden in query names (iodine, dnscat2, DNSExfiltrator,
//! Cobalt Strike DNS beacons). Looks at DNS questions and raises:
//!
//! - `long_label` / `long_name`: a label or a whole name longer than ordinary names ever are;
//! - `high_entropy`: the labels left of the registered domain look random (Shannon entropy in
//!   bits per character over at least `entropy_min_chars` characters);
//! - `unique_subdomains`: one client asks for many distinct names under one registered domain in
//!   a window (each query carries new data, so nothing is cached);
//! - `txt_volume`: one client sends many TXT/NULL queries in a window (the record types tunnels
//!   use for bulk downstream data).
//!
//! The registered domain is approximated without a public-suffix list: the last two labels, or
//! three when the last two are a known public second level (`gov.cn`, `com.cn`, `co.uk`, …).
//! Windows are tumbling, started by the first query of a key, and run on capture time. Alerts are
//! rate-limited per client, rule and registered domain.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::BuildHasher;
use std::net::{IpAddr, Ipv4Addr};

use palisade_wire::{Event, Severity};
use serde::Deserialize;
use serde_json::json;

use super::{AlertBuilder, Detector};
use crate::packet::PacketMeta;

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Characters of a query name kept as a sample in evidence.
const SAMPLE_NAME_MAX_CHARS: usize = 80;
const RTYPE_TXT: u16 = 16;
const RTYPE_NULL: u16 = 10;

/// Configuration of the [`DnsTunnelDetector`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsTunnelConfig {
    /// Run this detector.
    pub enabled: bool,
    /// A label longer than this many bytes is reported. Default 52: DNS allows 63, and tunnels
    /// fill labels to the limit, while hostnames, CDN hashes (32–40 hex) and DKIM selectors stay
    /// well below.
    pub max_label_len: usize,
    /// A name longer than this many bytes is reported. Default 180 of the 253 DNS allows:
    /// ordinary names are under 100, tunnels use nearly all of it.
    pub max_name_len: usize,
    /// Entropy is only judged over at least this many characters left of the registered domain
    /// (dots not counted). Default 24: over fewer characters even random text rarely reaches
    /// the threshold (the empirical entropy of n characters is at most log2 n) and normal names
    /// scatter widely.
    pub entropy_min_chars: usize,
    /// Shannon entropy, in bits per character, at or above which the labels left of the
    /// registered domain are reported. Default 4.0, above the 3.8 often quoted: English-like
    /// names of 30 characters reach about 3.8, and hex (CDN object hashes, md5/sha labels) tops
    /// out at 4 bits, with 5–10 % of random 32–60 digit hex strings above 3.8; base32/base36
    /// tunnel payloads of 30+ characters sit at 4.1–4.7. Hex-encoding tunnels (dnscat2) are
    /// left to the length and unique-subdomain rules.
    pub entropy_threshold_bits_per_char: f64,
    /// Length of the counting windows. Default 60 s.
    pub window_secs: u64,
    /// More distinct names than this under one registered domain from one client in one window
    /// is reported. Default 100: a busy web client asks for a few dozen names of one site, a
    /// tunnel for one new name per chunk of data.
    pub max_unique_subdomains_per_window: usize,
    /// More TXT (16) and NULL (10) queries than this from one client in one window is reported.
    /// Default 100: a mail server's SPF/DKIM/DMARC look-ups stay under two a second; tunnels
    /// poll continuously.
    pub max_txt_queries_per_window: u64,
    /// The same rule for the same client and registered domain alerts at most once in this
    /// interval. Default 300 s.
    pub alert_interval_secs: u64,
    /// Client × registered-domain windows tracked at once. Default 16 384; each holds at most
    /// `max_unique_subdomains_per_window + 1` name hashes. When full, the least recently used
    /// eighth is evicted (counted).
    pub max_tracked_domains: usize,
    /// Clients whose TXT/NULL counts are tracked at once. Default 16 384.
    pub max_tracked_clients: usize,
    /// Rate-limit entries kept at once. Default 16 384.
    pub max_alert_keys: usize,
    /// Names equal to or under these domains are ignored. Default: the reverse-lookup zones
    /// `in-addr.arpa` and `ip6.arpa`, whose names are long and numeric by design. Add local
    /// anti-virus or DNSBL look-up zones here.
    pub allow_domains: Vec<String>,
    /// Second-level domains under which names are registered one level deeper, so the
    /// registered domain of `a.b.example.com.cn` is `example.com.cn`.
    pub public_second_levels: Vec<String>,
    /// Also inspect the questions echoed in responses. Default false, so a query and its answer
    /// count once; turn on when the probe only sees the response direction.
    pub inspect_responses: bool,
}

impl Default for DnsTunnelConfig {
    fn default() -> Self {
        DnsTunnelConfig {
            enabled: true,
            max_label_len: 52,
            max_name_len: 180,
            entropy_min_chars: 24,
            entropy_threshold_bits_per_char: 4.0,
            window_secs: 60,
            max_unique_subdomains_per_window: 100,
            max_txt_queries_per_window: 100,
            alert_interval_secs: 300,
            max_tracked_domains: 16_384,
            max_tracked_clients: 16_384,
            max_alert_keys: 16_384,
            allow_domains: vec!["in-addr.arpa".into(), "ip6.arpa".into()],
            public_second_levels: [
                "com.cn", "net.cn", "org.cn", "gov.cn", "edu.cn", "ac.cn", "mil.cn", "com.hk",
                "com.tw", "com.mo", "co.uk", "org.uk", "ac.uk", "gov.uk", "co.jp", "com.au",
            ]
            .map(String::from)
            .to_vec(),
            inspect_responses: false,
        }
    }
}

/// Why a [`DnsTunnelDetector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DnsTunnelError {
    /// A config value is out of range.
    #[error("invalid dns_tunnel detector config: {field} {reason}")]
    InvalidConfig {
        /// The offending option.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Rule {
    LongLabel,
    LongName,
    HighEntropy,
    UniqueSubdomains,
    TxtVolume,
}

impl Rule {
    fn id(self) -> &'static str {
        match self {
            Rule::LongLabel => "palisade.net.dns_tunnel.long_label",
            Rule::LongName => "palisade.net.dns_tunnel.long_name",
            Rule::HighEntropy => "palisade.net.dns_tunnel.high_entropy",
            Rule::UniqueSubdomains => "palisade.net.dns_tunnel.unique_subdomains",
            Rule::TxtVolume => "palisade.net.dns_tunnel.txt_volume",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Rule::LongLabel => "DNS query with an over-long label",
            Rule::LongName => "DNS query with an over-long name",
            Rule::HighEntropy => "DNS query name looks random",
            Rule::UniqueSubdomains => "Many unique subdomains of one domain from one client",
            Rule::TxtVolume => "High TXT/NULL query volume from one client",
        }
    }

    fn severity(self) -> Severity {
        match self {
            Rule::UniqueSubdomains => Severity::High,
            _ => Severity::Medium,
        }
    }
}

/// Distinct names under one registered domain from one client in the current window.
#[derive(Debug)]
struct DomainWindow {
    start: i64,
    last_seen: i64,
    /// Hashes of the distinct names, capped at the threshold + 1.
    names: HashSet<u64>,
    queries: u64,
}

#[derive(Debug)]
struct ClientWindow {
    start: i64,
    last_seen: i64,
    txt_queries: u64,
}

/// Finds DNS tunnels; see the module docs.
#[derive(Debug)]
pub struct DnsTunnelDetector {
    config: DnsTunnelConfig,
    agent_id: String,
    allow: HashSet<String>,
    second_levels: HashSet<String>,
    hasher: RandomState,
    /// Keyed by a hash of (client, registered domain).
    domains: HashMap<u64, DomainWindow>,
    clients: HashMap<IpAddr, ClientWindow>,
    /// Keyed by a hash of (client, rule, registered domain); value: time of the last alert.
    last_alert: HashMap<u64, i64>,
    evictions: u64,
}

impl DnsTunnelDetector {
    /// Builds the detector, checking the config.
    pub fn new(config: DnsTunnelConfig, agent_id: &str) -> Result<Self, DnsTunnelError> {
        let invalid = |field, reason: &str| {
            Err(DnsTunnelError::InvalidConfig {
                field,
                reason: reason.to_string(),
            })
        };
        if config.max_label_len == 0 || config.max_label_len >= 63 {
            return invalid("max_label_len", "must be between 1 and 62");
        }
        if config.max_name_len == 0 || config.max_name_len >= 253 {
            return invalid("max_name_len", "must be between 1 and 252");
        }
        if !(0.5..=8.0).contains(&config.entropy_threshold_bits_per_char) {
            return invalid(
                "entropy_threshold_bits_per_char",
                "must be between 0.5 and 8 bits per character",
            );
        }
        if config.window_secs == 0 {
            return invalid("window_secs", "must be at least 1");
        }
        if config.max_tracked_domains == 0
            || config.max_tracked_clients == 0
            || config.max_alert_keys == 0
        {
            return invalid("max_tracked_*/max_alert_keys", "must be at least 1");
        }
        let normalize = |field: &'static str, list: &[String]| {
            list.iter()
                .map(|d| {
                    let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
                    if d.is_empty() || d.starts_with('.') || d.contains("..") {
                        Err(DnsTunnelError::InvalidConfig {
                            field,
                            reason: format!("entry {d:?} is not a domain name"),
                        })
                    } else {
                        Ok(d)
                    }
                })
                .collect::<Result<HashSet<_>, _>>()
        };
        let allow = normalize("allow_domains", &config.allow_domains)?;
        let second_levels = normalize("public_second_levels", &config.public_second_levels)?;
        Ok(DnsTunnelDetector {
            config,
            agent_id: agent_id.to_string(),
            allow,
            second_levels,
            hasher: RandomState::new(),
            domains: HashMap::new(),
            clients: HashMap::new(),
            last_alert: HashMap::new(),
            evictions: 0,
        })
    }

    fn window_nanos(&self) -> i64 {
        secs_to_nanos(self.config.window_secs)
    }

    fn allowed(&self, name: &str) -> bool {
        suffixes(name).any(|s| self.allow.contains(s))
    }

    /// Whether an alert for this key may go out now; records it if so.
    fn may_alert(&mut self, client: IpAddr, rule: Rule, domain: &str, now: i64) -> bool {
        let key = self.hasher.hash_one((client, rule, domain));
        let interval = secs_to_nanos(self.config.alert_interval_secs);
        if let Some(&last) = self.last_alert.get(&key) {
            if now.saturating_sub(last) < interval {
                return false;
            }
        } else if self.last_alert.len() >= self.config.max_alert_keys {
            self.evictions += evict_oldest(&mut self.last_alert, |t| *t);
        }
        self.last_alert.insert(key, now);
        true
    }

    #[allow(clippy::too_many_arguments)] // one call site per rule; a struct would only rename them
    fn alert(
        &mut self,
        packet: &PacketMeta<'_>,
        client: IpAddr,
        rule: Rule,
        domain: &str,
        message: String,
        evidence: serde_json::Value,
        out: &mut Vec<Event>,
    ) {
        if !self.may_alert(client, rule, domain, packet.ts) {
            return;
        }
        out.push(
            AlertBuilder::new(
                &self.agent_id,
                packet.ts,
                rule.id(),
                rule.name(),
                rule.severity(),
            )
            .flow_of(packet)
            .finish(message, evidence),
        );
    }

    fn on_question(
        &mut self,
        packet: &PacketMeta<'_>,
        client: IpAddr,
        name: &str,
        rtype: u16,
        out: &mut Vec<Event>,
    ) {
        let name = name.trim_end_matches('.');
        if name.is_empty() || self.allowed(name) {
            return;
        }
        let domain = registered_domain(name, &self.second_levels);
        let left = name
            .get(..name.len() - domain.len())
            .unwrap_or_default()
            .trim_end_matches('.');
        // Built only when an alert goes out: this runs for every question.
        let sample = || truncate(name, SAMPLE_NAME_MAX_CHARS);
        let ts = packet.ts;

        if let Some(label) = name
            .split('.')
            .find(|l| l.len() > self.config.max_label_len)
        {
            let evidence = json!({
                "domain": domain,
                "label_len": label.len(),
                "max_label_len": self.config.max_label_len,
                "name_len": name.len(),
                "query_type": rtype,
                "sample_name": sample(),
            });
            let message = format!(
                "DNS query for {domain} with a {}-byte label from {client}",
                label.len()
            );
            self.alert(
                packet,
                client,
                Rule::LongLabel,
                domain,
                message,
                evidence,
                out,
            );
        }

        if name.len() > self.config.max_name_len {
            let evidence = json!({
                "domain": domain,
                "name_len": name.len(),
                "max_name_len": self.config.max_name_len,
                "query_type": rtype,
                "sample_name": sample(),
            });
            let message = format!(
                "DNS query for {domain} with a {}-byte name from {client}",
                name.len()
            );
            self.alert(
                packet,
                client,
                Rule::LongName,
                domain,
                message,
                evidence,
                out,
            );
        }

        let chars = left.bytes().filter(|&b| b != b'.').count();
        if chars >= self.config.entropy_min_chars {
            let entropy = shannon_entropy(left.bytes().filter(|&b| b != b'.'));
            if entropy >= self.config.entropy_threshold_bits_per_char {
                let evidence = json!({
                    "domain": domain,
                    "entropy_bits_per_char": (entropy * 1000.0).round() / 1000.0,
                    "threshold_bits_per_char": self.config.entropy_threshold_bits_per_char,
                    "chars": chars,
                    "query_type": rtype,
                    "sample_name": sample(),
                });
                let message = format!(
                    "random-looking DNS query for {domain} ({entropy:.2} bits/char) from {client}"
                );
                self.alert(
                    packet,
                    client,
                    Rule::HighEntropy,
                    domain,
                    message,
                    evidence,
                    out,
                );
            }
        }

        // Distinct names of one registered domain; a name equal to the domain is no subdomain.
        if !left.is_empty() {
            let key = self.hasher.hash_one((client, domain));
            let name_hash = self.hasher.hash_one(name);
            let window = self.window_nanos();
            let cap = self.config.max_unique_subdomains_per_window;
            if !self.domains.contains_key(&key)
                && self.domains.len() >= self.config.max_tracked_domains
            {
                self.evictions += evict_oldest(&mut self.domains, |w| w.last_seen);
            }
            let w = self.domains.entry(key).or_insert_with(|| DomainWindow {
                start: ts,
                last_seen: ts,
                names: HashSet::new(),
                queries: 0,
            });
            if ts.saturating_sub(w.start) >= window {
                w.start = ts;
                w.names.clear();
                w.queries = 0;
            }
            w.last_seen = ts;
            w.queries += 1;
            if w.names.len() <= cap {
                w.names.insert(name_hash);
            }
            if w.names.len() > cap {
                let (distinct, queries) = (w.names.len(), w.queries);
                let evidence = json!({
                    "domain": domain,
                    "distinct_names": distinct,
                    "queries": queries,
                    "max_unique_subdomains_per_window": cap,
                    "window_secs": self.config.window_secs,
                    "sample_name": sample(),
                });
                let message = format!(
                    "{client} asked for more than {cap} distinct names under {domain} within {} s",
                    self.config.window_secs
                );
                self.alert(
                    packet,
                    client,
                    Rule::UniqueSubdomains,
                    domain,
                    message,
                    evidence,
                    out,
                );
            }
        }

        if rtype == RTYPE_TXT || rtype == RTYPE_NULL {
            let window = self.window_nanos();
            if !self.clients.contains_key(&client)
                && self.clients.len() >= self.config.max_tracked_clients
            {
                self.evictions += evict_oldest(&mut self.clients, |w| w.last_seen);
            }
            let w = self.clients.entry(client).or_insert(ClientWindow {
                start: ts,
                last_seen: ts,
                txt_queries: 0,
            });
            if ts.saturating_sub(w.start) >= window {
                w.start = ts;
                w.txt_queries = 0;
            }
            w.last_seen = ts;
            w.txt_queries += 1;
            let count = w.txt_queries;
            let max = self.config.max_txt_queries_per_window;
            if count > max {
                let evidence = json!({
                    "domain": domain,
                    "txt_null_queries": count,
                    "max_txt_queries_per_window": max,
                    "window_secs": self.config.window_secs,
                    "query_type": rtype,
                    "sample_name": sample(),
                });
                let message = format!(
                    "{client} sent more than {max} TXT/NULL queries within {} s",
                    self.config.window_secs
                );
                // Keyed on the client only: the volume is the signal, whatever the domains.
                self.alert(packet, client, Rule::TxtVolume, "", message, evidence, out);
            }
        }
    }
}

impl Detector for DnsTunnelDetector {
    fn name(&self) -> &'static str {
        "dns_tunnel"
    }

    fn on_packet(&mut self, packet: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled || packet.app.dns_questions.is_empty() {
            return;
        }
        if packet.app.dns_response && !self.config.inspect_responses {
            return;
        }
        let client = if packet.app.dns_response {
            packet.dst_ip
        } else {
            packet.src_ip
        }
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        for q in &packet.app.dns_questions {
            self.on_question(packet, client, &q.name, q.rtype, out);
        }
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        let window = self.window_nanos();
        let interval = secs_to_nanos(self.config.alert_interval_secs);
        self.domains
            .retain(|_, w| now.saturating_sub(w.start) < window);
        self.clients
            .retain(|_, w| now.saturating_sub(w.start) < window);
        self.last_alert
            .retain(|_, &mut t| now.saturating_sub(t) < interval);
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }
}

fn secs_to_nanos(secs: u64) -> i64 {
    i64::try_from(secs)
        .unwrap_or(i64::MAX)
        .saturating_mul(NANOS_PER_SEC)
}

/// Removes the least recently used eighth (at least one entry); returns how many went.
fn evict_oldest<K, V>(map: &mut HashMap<K, V>, last_seen: impl Fn(&V) -> i64) -> u64 {
    let mut times: Vec<i64> = map.values().map(&last_seen).collect();
    if times.is_empty() {
        return 0;
    }
    let k = (times.len() / 8).max(1);
    let (_, cutoff, _) = times.select_nth_unstable(k - 1);
    let cutoff = *cutoff;
    let before = map.len();
    map.retain(|_, v| last_seen(v) > cutoff);
    (before - map.len()) as u64
}

/// `a.b.example.com`, `b.example.com`, `example.com`, `com`.
fn suffixes(name: &str) -> impl Iterator<Item = &str> {
    std::iter::once(name).chain(
        name.match_indices('.')
            .filter_map(move |(i, _)| name.get(i + 1..)),
    )
}

/// The registered domain of `name` (lowercase, no trailing dot): the last two labels, or three
/// when the last two are in `second_levels`; the whole name when it has no more labels.
pub fn registered_domain<'a>(name: &'a str, second_levels: &HashSet<String>) -> &'a str {
    let mut dots = name.rmatch_indices('.').map(|(i, _)| i);
    let (Some(_), Some(second)) = (dots.next(), dots.next()) else {
        return name;
    };
    let last_two = name.get(second + 1..).unwrap_or(name);
    if !second_levels.contains(last_two) {
        return last_two;
    }
    match dots.next() {
        Some(third) => name.get(third + 1..).unwrap_or(name),
        None => name,
    }
}

/// Shannon entropy of a byte sequence, in bits per byte.
pub fn shannon_entropy(bytes: impl Iterator<Item = u8>) -> f64 {
    let mut counts = [0u32; 256];
    let mut total = 0u32;
    for b in bytes {
        counts[usize::from(b)] += 1;
        total += 1;
    }
    if total == 0 {
        return 0.0;
    }
    let total = f64::from(total);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / total;
            -p * p.log2()
        })
        .sum()
}

/// At most `max` characters of `s`, with `…` when cut.
fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", s.get(..i).unwrap_or(s)),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::testkit::rule_ids;
    use crate::packet::DnsName;

    const T0: i64 = 1_717_200_000 * NANOS_PER_SEC;

    fn query(ts: i64, client: [u8; 4], names: &[(&str, u16)]) -> PacketMeta<'static> {
        let mut p = PacketMeta::empty(ts);
        p.src_ip = Some(IpAddr::V4(Ipv4Addr::from(client)));
        p.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 53)));
        p.src_port = 53_000;
        p.dst_port = 53;
        p.ip_proto = crate::packet::proto::UDP;
        p.app.protocol = Some("dns");
        p.app.dns_questions = names
            .iter()
            .map(|(n, t)| DnsName {
                name: (*n).to_string(),
                rtype: *t,
            })
            .collect();
        p
    }

    fn detector() -> DnsTunnelDetector {
        DnsTunnelDetector::new(DnsTunnelConfig::default(), "probe-1").unwrap()
    }

    /// Base32-like pseudo-random labels, as a tunnel encodes data.
    fn random_label(rng: &mut fastrand::Rng, len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz234567";
        (0..len)
            .map(|_| char::from(ALPHABET[rng.usize(..ALPHABET.len())]))
            .collect()
    }

    #[test]
    fn registered_domain_approximation() {
        let d = detector();
        let sl = &d.second_levels;
        assert_eq!(registered_domain("www.gov.cn", sl), "www.gov.cn");
        assert_eq!(
            registered_domain("a.b.beijing.gov.cn", sl),
            "beijing.gov.cn"
        );
        assert_eq!(registered_domain("x.y.example.com", sl), "example.com");
        assert_eq!(registered_domain("example.com", sl), "example.com");
        assert_eq!(registered_domain("gov.cn", sl), "gov.cn");
        assert_eq!(registered_domain("localhost", sl), "localhost");
        assert_eq!(registered_domain("a.b.bbc.co.uk", sl), "bbc.co.uk");
    }

    #[test]
    fn entropy_values() {
        assert_eq!(shannon_entropy("aaaa".bytes()), 0.0);
        assert!((shannon_entropy("abcd".bytes()) - 2.0).abs() < 1e-9);
        assert!(shannon_entropy("mail-server-frontend-cluster".bytes()) < 4.0);
    }

    #[test]
    fn tunnel_of_random_subdomains_is_reported() {
        let mut d = detector();
        let mut rng = fastrand::Rng::with_seed(7);
        let mut out = Vec::new();
        for i in 0..150 {
            let name = format!(
                "{}.{}.t.tunnel.example.com",
                random_label(&mut rng, 40),
                random_label(&mut rng, 10)
            );
            d.on_packet(
                &query(T0 + i * 100_000_000, [10, 0, 0, 7], &[(&name, 1)]),
                &mut out,
            );
        }
        let ids = rule_ids(&out);
        // Rate-limited: one alert per rule for this client and domain.
        assert_eq!(
            ids.iter()
                .filter(|i| *i == "palisade.net.dns_tunnel.high_entropy")
                .count(),
            1,
            "{ids:?}"
        );
        let unique: Vec<&Event> = out
            .iter()
            .filter(|e| {
                e.rule.as_ref().and_then(|r| r.id.as_deref())
                    == Some("palisade.net.dns_tunnel.unique_subdomains")
            })
            .collect();
        assert_eq!(unique.len(), 1, "{ids:?}");
        let ev = &unique[0].palisade.as_ref().unwrap()["evidence"];
        assert_eq!(ev["domain"], "example.com");
        assert_eq!(ev["distinct_names"], 101);
        assert!(ev["sample_name"].as_str().unwrap().ends_with("example.com"));
        assert_eq!(
            unique[0].source.as_ref().unwrap().ip,
            Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 7)))
        );
    }

    #[test]
    fn normal_names_are_quiet() {
        let mut d = detector();
        let mut out = Vec::new();
        let names = [
            "www.gov.cn",
            "www.beijing.gov.cn",
            "zwfw.beijing.gov.cn",
            "img.alicdn.com",
            "g.alicdn.com",
            "d1a2b3c4d5e6f7.cloudfront.net",
            "e12345.dscb.akamaiedge.net",
            "fonts.googleapis.com",
            "selector1._domainkey.example.com.cn",
            "update-service-frontend.production.example.org",
            "3d0b41e0a4f8c9e2b7d6c5a4f3e2d1c0.cdn.example.net",
            "4.3.2.1.in-addr.arpa",
            "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.0.0.0.0.1.2.3.4.ip6.arpa",
        ];
        for (i, n) in names.iter().enumerate() {
            d.on_packet(&query(T0 + i as i64, [10, 0, 0, 8], &[(n, 1)]), &mut out);
        }
        // A browser asking for 80 distinct names of one site is still below the threshold.
        for i in 0..80 {
            let n = format!("static{i}.news.example.com");
            d.on_packet(&query(T0 + 1000 + i, [10, 0, 0, 8], &[(&n, 28)]), &mut out);
        }
        assert!(out.is_empty(), "{:?}", rule_ids(&out));
    }

    #[test]
    fn long_label_and_long_name() {
        let mut d = detector();
        let mut out = Vec::new();
        let label = "a".repeat(60);
        d.on_packet(
            &query(T0, [10, 0, 0, 9], &[(&format!("{label}.example.com"), 1)]),
            &mut out,
        );
        assert_eq!(rule_ids(&out), vec!["palisade.net.dns_tunnel.long_label"]);
        let ev = &out[0].palisade.as_ref().unwrap()["evidence"];
        assert_eq!(ev["label_len"], 60);

        let long = format!("{}.example.org", vec!["abcdefghij"; 18].join("."));
        out.clear();
        d.on_packet(&query(T0, [10, 0, 0, 9], &[(&long, 1)]), &mut out);
        assert_eq!(rule_ids(&out), vec!["palisade.net.dns_tunnel.long_name"]);
        let sample = out[0].palisade.as_ref().unwrap()["evidence"]["sample_name"]
            .as_str()
            .unwrap()
            .to_string();
        assert!(sample.chars().count() <= SAMPLE_NAME_MAX_CHARS + 1);
        assert!(sample.ends_with('…'));
    }

    #[test]
    fn txt_volume_per_client_and_window() {
        let mut d = detector();
        let mut out = Vec::new();
        for i in 0..100 {
            d.on_packet(
                &query(T0 + i * 1_000_000, [10, 0, 0, 10], &[("x.example.com", 16)]),
                &mut out,
            );
        }
        assert!(out.is_empty());
        d.on_packet(
            &query(T0 + 200_000_000, [10, 0, 0, 10], &[("y.example.com", 10)]),
            &mut out,
        );
        assert_eq!(rule_ids(&out), vec!["palisade.net.dns_tunnel.txt_volume"]);
        // A new window starts from zero.
        out.clear();
        let later = T0 + 400 * NANOS_PER_SEC;
        d.on_tick(later, &mut out);
        for i in 0..100 {
            d.on_packet(
                &query(later + i, [10, 0, 0, 10], &[("x.example.com", 16)]),
                &mut out,
            );
        }
        assert!(out.is_empty());
    }

    #[test]
    fn responses_ignored_by_default() {
        let mut d = detector();
        let mut out = Vec::new();
        let mut p = query(
            T0,
            [10, 0, 0, 11],
            &[(&format!("{}.example.com", "a".repeat(60)), 1)],
        );
        p.app.dns_response = true;
        d.on_packet(&p, &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn domain_table_is_bounded() {
        let mut d = DnsTunnelDetector::new(
            DnsTunnelConfig {
                max_tracked_domains: 8,
                ..DnsTunnelConfig::default()
            },
            "probe-1",
        )
        .unwrap();
        let mut out = Vec::new();
        for i in 0..50 {
            let n = format!("www.site{i}.example");
            d.on_packet(&query(T0 + i, [10, 0, 0, 12], &[(&n, 1)]), &mut out);
        }
        assert!(d.domains.len() <= 8);
        assert!(d.evictions() > 0);
    }

    #[test]
    fn config_is_strict() {
        assert!(toml::from_str::<DnsTunnelConfig>("max_label_length = 40").is_err());
        let c: DnsTunnelConfig = toml::from_str("max_label_len = 40").unwrap();
        assert_eq!(c.max_label_len, 40);
        let err = DnsTunnelDetector::new(
            DnsTunnelConfig {
                max_label_len: 70,
                ..DnsTunnelConfig::default()
            },
            "p",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("max_label_len"), "{err}");
    }
}
