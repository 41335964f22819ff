//! Personal data in clear text (数据泄露): mainland resident ID numbers, mainland mobile numbers
//! and bank card numbers in unencrypted TCP/UDP payloads (HTTP, SMTP, FTP, database protocols, …).
//!
//! One pass over each payload finds maximal digit runs; only runs of a length that can be one of
//! the three types, with no letter, digit or decimal point glued to either end, are checked
//! further (structure, date, check digit, Luhn). Matches are counted per flow (the 5-tuple with
//! its endpoints sorted, so both directions add up) and a flow is reported once per type when it
//! reaches that type's `min_matches_*`, then again only when the count has grown by
//! `realert_growth_factor`. No full value ever leaves this module, and none is kept in state: only
//! masked samples (`110105********123X`, `138****5678`, `6222********1234`).
//!
//! Limits, on purpose: a value split across two packets, or written with separators inside
//! (`6222 0212 …`, `138-1234-5678`), is not seen; TLS records are skipped since their bytes are
//! not the plaintext.

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_wire::{Event, Severity};
use serde::Deserialize;
use serde_json::json;

use super::{AlertBuilder, Detector};
use crate::packet::{proto, PacketMeta};

const NANOS_PER_SEC: i64 = 1_000_000_000;
/// Masked samples kept per flow and type.
const MAX_SAMPLES: usize = 3;

/// The kinds of personal data this detector finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PiiKind {
    /// Mainland resident identity card number (居民身份证号, GB 11643-1999).
    IdCard,
    /// Mainland mobile phone number.
    Mobile,
    /// Payment card number (UnionPay, Visa, Mastercard, JCB).
    BankCard,
}

impl PiiKind {
    /// Every kind, in evidence order.
    pub const ALL: [PiiKind; 3] = [PiiKind::IdCard, PiiKind::Mobile, PiiKind::BankCard];

    /// Stable short name used in rule ids and evidence.
    pub fn name(self) -> &'static str {
        match self {
            PiiKind::IdCard => "id_card",
            PiiKind::Mobile => "mobile",
            PiiKind::BankCard => "bank_card",
        }
    }

    fn index(self) -> usize {
        match self {
            PiiKind::IdCard => 0,
            PiiKind::Mobile => 1,
            PiiKind::BankCard => 2,
        }
    }

    fn rule_id(self) -> &'static str {
        match self {
            PiiKind::IdCard => "palisade.net.pii.id_card",
            PiiKind::Mobile => "palisade.net.pii.mobile",
            PiiKind::BankCard => "palisade.net.pii.bank_card",
        }
    }

    fn rule_name(self) -> &'static str {
        match self {
            PiiKind::IdCard => "Resident ID numbers in clear text",
            PiiKind::Mobile => "Mobile phone numbers in clear text",
            PiiKind::BankCard => "Bank card numbers in clear text",
        }
    }

    fn severity(self) -> Severity {
        match self {
            // Identity and card numbers enable fraud on their own.
            PiiKind::IdCard | PiiKind::BankCard => Severity::High,
            PiiKind::Mobile => Severity::Medium,
        }
    }
}

/// Configuration of the [`PiiDetector`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PiiConfig {
    /// Run this detector.
    pub enabled: bool,
    /// Resident ID numbers one flow must carry before it is reported. Default 1: a single ID
    /// number sent in clear text is already a disclosure under PIPL and MLPS.
    pub min_matches_id_card: u64,
    /// Mobile numbers one flow must carry before it is reported. Default 5: one number in a login
    /// or SMS-code form is routine traffic; several in one flow look like a contact list leaving.
    pub min_matches_mobile: u64,
    /// Bank card numbers one flow must carry before it is reported. Default 1: no legitimate
    /// service should move a card number unencrypted.
    pub min_matches_bank_card: u64,
    /// After a report, a flow is reported again for the same type only once its count has grown
    /// by this factor (default 10: reports at 1, 10, 100, … matches), so a bulk export raises a
    /// few alerts with rising counts rather than one per packet.
    pub realert_growth_factor: u64,
    /// Flows with at least one match tracked at once. Default 65 536 (a few MB); when full, the
    /// least recently matched eighth is evicted (counted in `evictions`).
    pub max_flows: usize,
    /// A flow with no new match for this long is forgotten. Default 600 s, longer than typical
    /// HTTP keep-alive and SMTP sessions.
    pub flow_idle_timeout_secs: u64,
    /// Bytes scanned from the start of each payload. Default 65 535, a whole IP packet: the cap
    /// only bounds the work on reassembled or jumbo payloads.
    pub max_scan_bytes: usize,
}

impl Default for PiiConfig {
    fn default() -> Self {
        PiiConfig {
            enabled: true,
            min_matches_id_card: 1,
            min_matches_mobile: 5,
            min_matches_bank_card: 1,
            realert_growth_factor: 10,
            max_flows: 65_536,
            flow_idle_timeout_secs: 600,
            max_scan_bytes: 65_535,
        }
    }
}

/// Why a [`PiiDetector`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    /// A config value is out of range.
    #[error("invalid pii detector config: {field} {reason}")]
    InvalidConfig {
        /// The offending option.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A flow with its endpoints in a fixed order, so both directions share one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FlowKey {
    proto: u8,
    a: (IpAddr, u16),
    b: (IpAddr, u16),
}

impl FlowKey {
    fn new(proto: u8, src: (IpAddr, u16), dst: (IpAddr, u16)) -> Self {
        let (a, b) = if src <= dst { (src, dst) } else { (dst, src) };
        FlowKey { proto, a, b }
    }
}

#[derive(Debug, Default)]
struct FlowState {
    counts: [u64; 3],
    /// Count at the last report per type; 0 = never reported.
    reported: [u64; 3],
    /// Masked samples only.
    samples: [Vec<String>; 3],
    last_seen: i64,
}

/// Finds personal data in clear-text payloads; see the module docs.
#[derive(Debug)]
pub struct PiiDetector {
    config: PiiConfig,
    agent_id: String,
    flows: HashMap<FlowKey, FlowState>,
    evictions: u64,
    /// The capture day (days since the epoch) and its year, so the calendar arithmetic runs
    /// once a day of capture time instead of once a packet.
    year_of_day: (i64, i32),
}

impl PiiDetector {
    /// Builds the detector, checking the config.
    pub fn new(config: PiiConfig, agent_id: &str) -> Result<Self, PiiError> {
        let invalid = |field, reason| Err(PiiError::InvalidConfig { field, reason });
        if config.min_matches_id_card == 0 {
            return invalid("min_matches_id_card", "must be at least 1");
        }
        if config.min_matches_mobile == 0 {
            return invalid("min_matches_mobile", "must be at least 1");
        }
        if config.min_matches_bank_card == 0 {
            return invalid("min_matches_bank_card", "must be at least 1");
        }
        if config.realert_growth_factor < 2 {
            return invalid("realert_growth_factor", "must be at least 2");
        }
        if config.max_flows == 0 {
            return invalid("max_flows", "must be at least 1");
        }
        if config.flow_idle_timeout_secs == 0 {
            return invalid("flow_idle_timeout_secs", "must be at least 1");
        }
        Ok(PiiDetector {
            config,
            agent_id: agent_id.to_string(),
            flows: HashMap::new(),
            evictions: 0,
            year_of_day: (0, capture_year(0)),
        })
    }

    /// Flows currently tracked.
    pub fn tracked_flows(&self) -> usize {
        self.flows.len()
    }

    fn min_matches(&self, kind: PiiKind) -> u64 {
        match kind {
            PiiKind::IdCard => self.config.min_matches_id_card,
            PiiKind::Mobile => self.config.min_matches_mobile,
            PiiKind::BankCard => self.config.min_matches_bank_card,
        }
    }

    /// Evicts the least recently matched eighth of the table, so a full table costs one
    /// selection per many inserts rather than a scan per insert.
    fn make_room(&mut self) {
        let mut last_seen: Vec<i64> = self.flows.values().map(|s| s.last_seen).collect();
        let k = (last_seen.len() / 8).max(1);
        let (_, cutoff, _) = last_seen.select_nth_unstable(k - 1);
        let cutoff = *cutoff;
        let before = self.flows.len();
        self.flows.retain(|_, s| s.last_seen > cutoff);
        self.evictions += (before - self.flows.len()) as u64;
    }
}

impl Detector for PiiDetector {
    fn name(&self) -> &'static str {
        "pii"
    }

    fn on_packet(&mut self, packet: &PacketMeta<'_>, out: &mut Vec<Event>) {
        if !self.config.enabled
            || packet.fragment
            || packet.payload.is_empty()
            || !matches!(packet.ip_proto, proto::TCP | proto::UDP)
            || packet.app.protocol == Some("tls")
            || is_tls_record(packet.payload)
        {
            return;
        }
        let (Some(src_ip), Some(dst_ip)) = (packet.src_ip, packet.dst_ip) else {
            return;
        };
        let data = packet
            .payload
            .get(..self.config.max_scan_bytes)
            .unwrap_or(packet.payload);
        // Most payloads hold no run of digits long enough to be a value: leave before setting
        // up the per-packet tallies.
        if next_long_digit_run(data, 0).is_none() {
            return;
        }

        let day = packet.ts.div_euclid(DAY_NANOS);
        if self.year_of_day.0 != day {
            self.year_of_day = (day, capture_year(packet.ts));
        }
        let mut found = [0u64; 3];
        let mut samples: [Vec<String>; 3] = Default::default();
        scan(data, self.year_of_day.1, |kind, value| {
            let i = kind.index();
            found[i] += 1;
            if samples[i].len() < MAX_SAMPLES {
                samples[i].push(mask(kind, value));
            }
        });
        if found == [0; 3] {
            return;
        }

        let key = FlowKey::new(
            packet.ip_proto,
            (src_ip, packet.src_port),
            (dst_ip, packet.dst_port),
        );
        if !self.flows.contains_key(&key) && self.flows.len() >= self.config.max_flows {
            self.make_room();
        }
        let mins = PiiKind::ALL.map(|k| self.min_matches(k));
        let growth = self.config.realert_growth_factor;
        let state = self.flows.entry(key).or_default();
        state.last_seen = packet.ts;
        for (i, new) in samples.into_iter().enumerate() {
            state.counts[i] += found[i];
            for s in new {
                if state.samples[i].len() < MAX_SAMPLES && !state.samples[i].contains(&s) {
                    state.samples[i].push(s);
                }
            }
        }

        for kind in PiiKind::ALL {
            let i = kind.index();
            let count = state.counts[i];
            let previous = state.reported[i];
            let due = if previous == 0 {
                count >= mins[i]
            } else {
                count >= previous.saturating_mul(growth)
            };
            if found[i] == 0 || !due {
                continue;
            }
            state.reported[i] = count;
            let app_protocol = app_protocol(packet);
            let counts: serde_json::Map<_, _> = PiiKind::ALL
                .iter()
                .map(|k| (k.name().to_string(), json!(state.counts[k.index()])))
                .collect();
            let sample_map: serde_json::Map<_, _> = PiiKind::ALL
                .iter()
                .filter(|k| !state.samples[k.index()].is_empty())
                .map(|k| (k.name().to_string(), json!(state.samples[k.index()])))
                .collect();
            let evidence = json!({
                "pii_type": kind.name(),
                "count": count,
                "previously_reported": previous,
                "min_matches": mins[i],
                "counts": counts,
                "samples": sample_map,
                "app_protocol": app_protocol,
            });
            let message = format!(
                "{count} {} in clear text in one {} flow ({app_protocol})",
                kind.name(),
                super::transport_name(packet.ip_proto).unwrap_or("ip"),
            );
            out.push(
                AlertBuilder::new(
                    &self.agent_id,
                    packet.ts,
                    kind.rule_id(),
                    kind.rule_name(),
                    kind.severity(),
                )
                .flow_of(packet)
                .finish(message, evidence),
            );
        }
    }

    fn on_tick(&mut self, now: i64, _out: &mut Vec<Event>) {
        let timeout = i64::try_from(self.config.flow_idle_timeout_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(NANOS_PER_SEC);
        self.flows
            .retain(|_, s| now.saturating_sub(s.last_seen) <= timeout);
    }

    fn evictions(&self) -> u64 {
        self.evictions
    }
}

/// A TLS record header (change_cipher_spec, alert, handshake or application_data, version 3.x):
/// the bytes after it are ciphertext or certificates, not user data.
fn is_tls_record(payload: &[u8]) -> bool {
    matches!(payload, [0x14..=0x17, 0x03, 0x00..=0x04, ..])
}

/// The application protocol for evidence: the decoder's, else a guess from the well-known port.
fn app_protocol(p: &PacketMeta<'_>) -> &'static str {
    if let Some(name) = p.app.protocol {
        return name;
    }
    let by_port = |port: u16| match port {
        80 | 8080 | 8000 | 8888 => Some("http"),
        25 | 587 => Some("smtp"),
        21 => Some("ftp"),
        110 => Some("pop3"),
        143 => Some("imap"),
        23 => Some("telnet"),
        1433 => Some("tds"),
        1521 => Some("oracle"),
        3306 => Some("mysql"),
        5432 => Some("postgresql"),
        6379 => Some("redis"),
        514 => Some("syslog"),
        _ => None,
    };
    by_port(p.dst_port)
        .or_else(|| by_port(p.src_port))
        .unwrap_or("unknown")
}

/// Calls `found` for each personal-data value in `data`: the 18 characters of an ID number, the
/// 11 digits of a mobile number (without any `+86`/`0086` prefix), the digits of a card number.
/// `max_birth_year` bounds ID birth dates (the capture's year). One pass over the bytes.
pub fn scan(data: &[u8], max_birth_year: i32, mut found: impl FnMut(PiiKind, &[u8])) {
    let mut i = 0;
    while let Some((start, end)) = next_long_digit_run(data, i) {
        i = end;
        let before = start.checked_sub(1).and_then(|p| data.get(p)).copied();
        // A letter glued on the left (`abc13812345678`, hex strings) or a decimal point after a
        // digit (`3.1381234567890`) means this run is part of a longer token.
        if before.is_some_and(|b| b.is_ascii_alphabetic())
            || (before == Some(b'.')
                && start
                    .checked_sub(2)
                    .and_then(|p| data.get(p))
                    .is_some_and(u8::is_ascii_digit))
        {
            continue;
        }
        let run = data.get(start..end).unwrap_or_default();
        let after = data.get(end).copied();

        if run.len() == 17 && matches!(after, Some(b'X' | b'x')) {
            i = end + 1;
            if !glued_right(data, end + 1) {
                let id = data.get(start..end + 1).unwrap_or_default();
                if valid_id_number(id, max_birth_year) {
                    found(PiiKind::IdCard, id);
                }
            }
            continue;
        }
        if glued_right(data, end) {
            continue;
        }
        match run.len() {
            11 if valid_mobile(run) => found(PiiKind::Mobile, run),
            13 if before == Some(b'+') && run.starts_with(b"86") => {
                let number = run.get(2..).unwrap_or_default();
                if valid_mobile(number) {
                    found(PiiKind::Mobile, number);
                }
            }
            15 if run.starts_with(b"0086") => {
                let number = run.get(4..).unwrap_or_default();
                if valid_mobile(number) {
                    found(PiiKind::Mobile, number);
                }
            }
            18 if valid_id_number(run, max_birth_year) => found(PiiKind::IdCard, run),
            16..=19 if valid_card_number(run) => found(PiiKind::BankCard, run),
            _ => {}
        }
    }
}

/// Every value [`scan`] looks for holds at least this many consecutive digits.
const MIN_RUN: usize = 11;

/// The next maximal run of at least [`MIN_RUN`] ASCII digits starting at or after `from`, where
/// `from` is 0 or follows a non-digit. Shorter runs can never match, so instead of testing every
/// byte this probes the last byte of each `MIN_RUN`-byte window: a non-digit there rules out
/// the whole window, which makes digit-free payloads cost about one test per 11 bytes.
fn next_long_digit_run(data: &[u8], from: usize) -> Option<(usize, usize)> {
    let digit = |at: usize| data.get(at).is_some_and(u8::is_ascii_digit);
    let mut i = from;
    loop {
        // One probe per window over exact chunks: the tightest loop for the common case,
        // payloads with no long digit run at all.
        let skipped = data
            .get(i..)?
            .chunks_exact(MIN_RUN)
            .position(|w| w.last().is_some_and(u8::is_ascii_digit))?;
        let probe = i + skipped * MIN_RUN + MIN_RUN - 1;
        // Every window before the one ending at `probe` was ruled out by its probe.
        i = probe + 1 - MIN_RUN;
        // Positions before `i` are known not to continue a run (see the invariant above).
        let mut start = probe;
        while start > i && digit(start - 1) {
            start -= 1;
        }
        let mut end = probe + 1;
        while digit(end) {
            end += 1;
        }
        if end - start >= MIN_RUN {
            return Some((start, end));
        }
        // `data[end]` is not a digit (or the end), so no longer run starts at or before it.
        i = end + 1;
    }
}

/// Whether the token continues at `at`: a letter, or a decimal point followed by a digit.
fn glued_right(data: &[u8], at: usize) -> bool {
    match data.get(at) {
        Some(b) if b.is_ascii_alphanumeric() => true,
        Some(b'.') => data.get(at + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

/// Province-level codes (first two digits) in use: 11–15 north, 21–23 north-east, 31–37 east,
/// 41–46 central-south, 50–54 south-west, 61–65 north-west, 71 Taiwan, 81–82 Hong Kong and Macao,
/// 83 residence permits for Taiwan residents.
fn valid_province(code: u8) -> bool {
    matches!(
        code,
        11..=15 | 21..=23 | 31..=37 | 41..=46 | 50..=54 | 61..=65 | 71 | 81..=83
    )
}

/// A mainland resident ID number (GB 11643-1999): 6-digit region code with a known province,
/// birth date `YYYYMMDD` from 1900 to `max_birth_year`, 3-digit sequence, and the check character
/// (weights 7 9 10 5 8 4 2 1 6 3 7 9 10 5 8 4 2, sum mod 11 mapped through `10X98765432`).
pub fn valid_id_number(id: &[u8], max_birth_year: i32) -> bool {
    let [body @ .., check] = id else {
        return false;
    };
    if id.len() != 18 || !body.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let num = |range: std::ops::Range<usize>| -> u32 {
        body.get(range)
            .unwrap_or_default()
            .iter()
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    };
    let Ok(province) = u8::try_from(num(0..2)) else {
        return false;
    };
    let year = i32::try_from(num(6..10)).unwrap_or(i32::MAX);
    if !valid_province(province) || !valid_date(year, num(10..12), num(12..14), max_birth_year) {
        return false;
    }
    id_check_char(body) == check.to_ascii_uppercase()
}

/// The GB 11643-1999 check character for the first 17 digits.
pub fn id_check_char(first17: &[u8]) -> u8 {
    const WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
    const MAP: &[u8; 11] = b"10X98765432";
    let sum: u32 = first17
        .iter()
        .zip(WEIGHTS)
        .map(|(d, w)| u32::from(d.wrapping_sub(b'0')) * w)
        .sum();
    MAP.get((sum % 11) as usize).copied().unwrap_or(b'?')
}

fn valid_date(year: i32, month: u32, day: u32, max_year: i32) -> bool {
    if !(1900..=max_year).contains(&year) {
        return false;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// A mainland mobile number: 11 digits in a segment MIIT has allocated to mobile service
/// (13x; 145–149; 150–153, 155–159; 162, 165–167; 170–178; 18x; 190–193, 195–199).
pub fn valid_mobile(number: &[u8]) -> bool {
    let [b'1', second, third, ..] = number else {
        return false;
    };
    if number.len() != 11 || !number.iter().all(u8::is_ascii_digit) {
        return false;
    }
    match second {
        b'3' | b'8' => true,
        b'4' => matches!(third, b'5'..=b'9'),
        b'5' | b'9' => *third != b'4',
        b'6' => matches!(third, b'2' | b'5' | b'6' | b'7'),
        b'7' => *third != b'9',
        _ => false,
    }
}

/// A payment card number: 16–19 digits, Luhn-valid, with an issuer prefix common in China:
/// `62` UnionPay (16–19 digits), `4` Visa (16 or 19), `51`–`55` Mastercard (16), `3528`–`3589`
/// JCB (16–19). Other schemes (Amex 15 digits, 2-series Mastercard, Diners) are left out: rare in
/// mainland traffic, and every extra prefix admits more random Luhn-valid digit runs.
pub fn valid_card_number(digits: &[u8]) -> bool {
    let len = digits.len();
    if !(16..=19).contains(&len) || !digits.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let prefix4 = digits
        .get(..4)
        .unwrap_or_default()
        .iter()
        .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let issuer_ok = match prefix4 / 100 {
        62 => true,
        40..=49 => len == 16 || len == 19,
        51..=55 => len == 16,
        35 => (3528..=3589).contains(&prefix4),
        _ => false,
    };
    issuer_ok && luhn_valid(digits)
}

/// The Luhn (mod 10) check over ASCII digits.
pub fn luhn_valid(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, d)| {
            let d = u32::from(d.wrapping_sub(b'0'));
            if i % 2 == 1 {
                let doubled = d * 2;
                if doubled > 9 {
                    doubled - 9
                } else {
                    doubled
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// The masked form of a value, safe to put in an event: ID `110105********123X`, mobile
/// `138****5678`, card `6222********1234` (first four, last four).
pub fn mask(kind: PiiKind, value: &[u8]) -> String {
    let (keep_head, keep_tail) = match kind {
        PiiKind::IdCard => (6, 4),
        PiiKind::Mobile => (3, 4),
        PiiKind::BankCard => (4, 4),
    };
    let len = value.len();
    if len <= keep_head + keep_tail {
        return "*".repeat(len);
    }
    value
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if i < keep_head || i >= len - keep_tail {
                char::from(b.to_ascii_uppercase())
            } else {
                '*'
            }
        })
        .collect()
}

const DAY_NANOS: i64 = 86_400 * NANOS_PER_SEC;

/// The UTC calendar year of a capture timestamp (ns since the epoch).
fn capture_year(ts: i64) -> i32 {
    // Days-to-civil conversion (H. Hinnant's algorithm), so no clock or calendar crate is needed.
    let days = ts.div_euclid(DAY_NANOS);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let year = yoe + era * 400 + i64::from(mp >= 10);
    i32::try_from(year).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    /// 2024-06-01T00:00:00Z.
    const TS: i64 = 1_717_200_000 * NANOS_PER_SEC;

    fn id_with_check(first17: &str) -> String {
        let c = id_check_char(first17.as_bytes());
        format!("{first17}{}", char::from(c))
    }

    fn found_in(text: &str) -> Vec<(PiiKind, String)> {
        let mut v = Vec::new();
        scan(text.as_bytes(), 2024, |k, val| {
            v.push((k, String::from_utf8_lossy(val).into_owned()))
        });
        v
    }

    fn packet(payload: &[u8], src_port: u16) -> PacketMeta<'_> {
        let mut p = PacketMeta::empty(TS);
        p.src_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 5)));
        p.dst_ip = Some(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 80)));
        p.src_port = src_port;
        p.dst_port = 80;
        p.ip_proto = proto::TCP;
        p.payload = payload;
        p
    }

    fn detector() -> PiiDetector {
        PiiDetector::new(PiiConfig::default(), "probe-1").unwrap()
    }

    #[test]
    fn long_run_search_finds_every_maximal_run_of_eleven_digits() {
        // Reference: every maximal digit run, filtered by length.
        fn naive(data: &[u8]) -> Vec<(usize, usize)> {
            let mut runs = Vec::new();
            let mut i = 0;
            while i < data.len() {
                if data[i].is_ascii_digit() {
                    let start = i;
                    while i < data.len() && data[i].is_ascii_digit() {
                        i += 1;
                    }
                    if i - start >= MIN_RUN {
                        runs.push((start, i));
                    }
                }
                i += 1;
            }
            runs
        }
        let mut rng = fastrand::Rng::with_seed(7);
        for _ in 0..2_000 {
            let len = rng.usize(0..80);
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    if rng.u8(0..8) == 0 {
                        b'x'
                    } else {
                        b'0' + rng.u8(0..10)
                    }
                })
                .collect();
            let mut fast = Vec::new();
            let mut i = 0;
            while let Some((start, end)) = next_long_digit_run(&data, i) {
                fast.push((start, end));
                i = end;
            }
            assert_eq!(fast, naive(&data), "{}", String::from_utf8_lossy(&data));
        }
    }

    #[test]
    fn known_id_number_check_digit() {
        // The specimen number printed in GB 11643-1999 explanations.
        assert!(valid_id_number(b"11010519491231002X", 2024));
        assert!(valid_id_number(b"11010519491231002x", 2024));
        assert!(!valid_id_number(b"110105194912310021", 2024));
        assert_eq!(id_check_char(b"11010519491231002"), b'X');
    }

    #[test]
    fn check_char_matches_reference_values_for_every_remainder() {
        // Computed independently of this code, one per remainder of the weighted sum mod 11.
        let reference: [&[u8]; 11] = [
            b"110105195601197001",
            b"110105195909137590",
            b"11010519840916406X",
            b"110105200807238079",
            b"110105198702200138",
            b"110105197310166407",
            b"110105196404234816",
            b"110105195203162225",
            b"110105199901278864",
            b"110105200905172413",
            b"110105196510181332",
        ];
        for id in reference {
            assert!(valid_id_number(id, 2024), "{}", String::from_utf8_lossy(id));
            let mut wrong = id.to_vec();
            wrong[17] = if wrong[17] == b'0' { b'1' } else { b'0' };
            assert!(!valid_id_number(&wrong, 2024));
        }
    }

    #[test]
    fn id_number_dates_and_region_are_checked() {
        assert!(valid_id_number(
            id_with_check("44030420000229123").as_bytes(),
            2024
        ));
        // 1900 is not a leap year; 2001-02-29 does not exist.
        assert!(!valid_id_number(
            id_with_check("44030419000229123").as_bytes(),
            2024
        ));
        assert!(!valid_id_number(
            id_with_check("44030420010229123").as_bytes(),
            2024
        ));
        assert!(!valid_id_number(
            id_with_check("44030418991231123").as_bytes(),
            2024
        ));
        assert!(!valid_id_number(
            id_with_check("44030419901301123").as_bytes(),
            2024
        ));
        // Born after the capture year.
        assert!(!valid_id_number(
            id_with_check("44030420250101123").as_bytes(),
            2024
        ));
        assert!(valid_id_number(
            id_with_check("44030420250101123").as_bytes(),
            2025
        ));
        // 99 is no province.
        assert!(!valid_id_number(
            id_with_check("99030419900101123").as_bytes(),
            2024
        ));
    }

    #[test]
    fn mobile_numbers_stand_alone_only() {
        assert_eq!(
            found_in("tel=13812345678&x=1"),
            vec![(PiiKind::Mobile, "13812345678".into())]
        );
        assert_eq!(
            found_in("call +8613912345678 now"),
            vec![(PiiKind::Mobile, "13912345678".into())]
        );
        assert_eq!(
            found_in("call 008615912345678."),
            vec![(PiiKind::Mobile, "15912345678".into())]
        );
        assert_eq!(
            found_in("联系电话：18612345678。"),
            vec![(PiiKind::Mobile, "18612345678".into())]
        );
        // Inside longer digit runs, letter runs, decimals; unallocated segments.
        assert!(found_in("id=213812345678").is_empty());
        assert!(found_in("id=138123456789").is_empty());
        assert!(found_in("sess=ab13812345678").is_empty());
        assert!(found_in("x=13812345678cd").is_empty());
        assert!(found_in("v=0.13812345678").is_empty());
        assert!(found_in("v=13812345678.5").is_empty());
        assert!(found_in("n=12012345678 n=14012345678 n=17912345678").is_empty());
    }

    #[test]
    fn luhn_and_card_prefixes() {
        assert!(luhn_valid(b"4111111111111111"));
        assert!(!luhn_valid(b"4111111111111112"));
        assert!(valid_card_number(b"4111111111111111"));
        assert!(valid_card_number(b"6222021234567890128"));
        assert!(!valid_card_number(b"6222021234567890127"));
        assert!(valid_card_number(b"5555555555554444"));
        assert!(valid_card_number(b"3530111333300000"));
        // Luhn-valid but no accepted issuer prefix, or wrong length for the scheme.
        assert!(!valid_card_number(b"1234567812345670"));
        assert!(!valid_card_number(b"55555555555544445"));
        assert_eq!(
            found_in("card:6222021234567890128;"),
            vec![(PiiKind::BankCard, "6222021234567890128".into())]
        );
        assert!(found_in("card:62220212345678901280").is_empty());
        assert!(found_in("tok=x4111111111111111").is_empty());
    }

    #[test]
    fn id_numbers_found_in_text_with_boundaries() {
        let id = id_with_check("11010519900307123");
        assert_eq!(
            found_in(&format!("身份证号:{id}\r\n")),
            vec![(PiiKind::IdCard, id.clone())]
        );
        assert_eq!(
            found_in("sfz=11010519491231002x&"),
            vec![(PiiKind::IdCard, "11010519491231002x".into())]
        );
        assert!(found_in("sfz=11010519491231002XY").is_empty());
        assert!(found_in(&format!("9{id}")).is_empty());
        assert!(found_in(&format!("a{id}")).is_empty());
    }

    #[test]
    fn capture_year_from_timestamps() {
        assert_eq!(capture_year(0), 1970);
        assert_eq!(capture_year(TS), 2024);
        // 2023-12-31T23:59:59Z and one second later.
        assert_eq!(capture_year(1_704_067_199 * NANOS_PER_SEC), 2023);
        assert_eq!(capture_year(1_704_067_200 * NANOS_PER_SEC), 2024);
        assert_eq!(capture_year(-1), 1969);
    }

    #[test]
    fn masks_hide_the_middle() {
        assert_eq!(
            mask(PiiKind::IdCard, b"11010519491231002x"),
            "110105********002X"
        );
        assert_eq!(mask(PiiKind::Mobile, b"13812345678"), "138****5678");
        assert_eq!(
            mask(PiiKind::BankCard, b"6222021234567890128"),
            "6222***********0128"
        );
    }

    #[test]
    fn alert_never_carries_full_values() {
        let id = id_with_check("11010519900307123");
        let payload = format!(
            "POST /form HTTP/1.1\r\nHost: x\r\n\r\nname=a&id={id}&tel=13812345678&card=6222021234567890128"
        );
        let mut d = PiiDetector::new(
            PiiConfig {
                min_matches_mobile: 1,
                ..PiiConfig::default()
            },
            "probe-1",
        )
        .unwrap();
        let mut out = Vec::new();
        d.on_packet(&packet(payload.as_bytes(), 40000), &mut out);
        assert_eq!(out.len(), 3);
        for e in &out {
            let json = String::from_utf8(e.to_json()).unwrap();
            assert!(!json.contains(&id), "{json}");
            assert!(!json.contains("13812345678"), "{json}");
            assert!(!json.contains("6222021234567890128"), "{json}");
            assert!(!json.contains("19900307"), "birth date leaked: {json}");
        }
        let ev = out[0].palisade.as_ref().unwrap()["evidence"].clone();
        assert_eq!(ev["pii_type"], "id_card");
        assert_eq!(ev["counts"]["id_card"], 1);
        assert_eq!(ev["counts"]["mobile"], 1);
        assert_eq!(
            ev["samples"]["id_card"][0],
            format!("110105********{}", &id[14..])
        );
        assert_eq!(ev["samples"]["mobile"][0], "138****5678");
        assert_eq!(ev["app_protocol"], "http");
        assert_eq!(
            out[0].rule.as_ref().unwrap().id.as_deref(),
            Some("palisade.net.pii.id_card")
        );
    }

    #[test]
    fn tls_payload_is_skipped() {
        let id = id_with_check("11010519900307123");
        let mut payload = vec![0x17, 0x03, 0x03, 0x00, 0x40];
        payload.extend_from_slice(format!(" {id} ").as_bytes());
        let mut d = detector();
        let mut out = Vec::new();
        d.on_packet(&packet(&payload, 40000), &mut out);
        assert!(out.is_empty());
        // The same bytes without the record header are reported.
        d.on_packet(&packet(&payload[5..], 40000), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn mobile_threshold_and_growth_realert() {
        let mut d = detector();
        let mut out = Vec::new();
        let one = b"tel=13812345678\n";
        for _ in 0..4 {
            d.on_packet(&packet(one, 40000), &mut out);
        }
        assert!(out.is_empty(), "below min_matches_mobile");
        d.on_packet(&packet(one, 40000), &mut out);
        assert_eq!(out.len(), 1);
        // Nothing more until the count reaches 5 × 10 = 50.
        for _ in 0..44 {
            d.on_packet(&packet(one, 40000), &mut out);
        }
        assert_eq!(out.len(), 1);
        d.on_packet(&packet(one, 40000), &mut out);
        assert_eq!(out.len(), 2);
        let ev = &out[1].palisade.as_ref().unwrap()["evidence"];
        assert_eq!(ev["count"], 50);
        assert_eq!(ev["previously_reported"], 5);
        // Another flow counts on its own.
        d.on_packet(&packet(one, 40001), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn both_directions_share_a_flow_and_idle_flows_expire() {
        let mut d = detector();
        let mut out = Vec::new();
        let id = id_with_check("11010519900307123");
        let p = packet(id.as_bytes(), 40000);
        let mut reverse = p.clone();
        std::mem::swap(&mut reverse.src_ip, &mut reverse.dst_ip);
        std::mem::swap(&mut reverse.src_port, &mut reverse.dst_port);
        d.on_packet(&p, &mut out);
        d.on_packet(&reverse, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(d.tracked_flows(), 1);
        d.on_tick(TS + 601 * NANOS_PER_SEC, &mut out);
        assert_eq!(d.tracked_flows(), 0);
        d.on_packet(&p, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn full_table_evicts_and_counts() {
        let mut d = PiiDetector::new(
            PiiConfig {
                max_flows: 16,
                ..PiiConfig::default()
            },
            "probe-1",
        )
        .unwrap();
        let mut out = Vec::new();
        for port in 0..40u16 {
            let mut p = packet(b"tel=13812345678", 1000 + port);
            p.ts = TS + i64::from(port);
            d.on_packet(&p, &mut out);
        }
        assert!(d.tracked_flows() <= 16);
        assert!(d.evictions() > 0);
    }

    #[test]
    fn config_rejects_unknown_keys_and_bad_values() {
        assert!(toml::from_str::<PiiConfig>("min_matches_mobiles = 3").is_err());
        let c: PiiConfig = toml::from_str("min_matches_mobile = 3").unwrap();
        assert_eq!(c.min_matches_mobile, 3);
        assert!(c.enabled);
        let bad = PiiConfig {
            realert_growth_factor: 1,
            ..PiiConfig::default()
        };
        let err = PiiDetector::new(bad, "p").unwrap_err().to_string();
        assert!(err.contains("realert_growth_factor"), "{err}");
    }
}
