//! TLS ClientHello at the start of a TCP payload: record and handshake headers, the fields
//! detectors use (SNI, ALPN, supported versions), and the JA3 and JA4 client fingerprints.
//!
//! Parsing is bounded by the record and handshake lengths and borrows from the packet; the
//! fingerprints are computed on demand ([`ClientHello::ja3`], [`ClientHello::ja4`]) since they
//! allocate and hash.
//!
//! JA3 (Salesforce): `SSLVersion,Ciphers,Extensions,EllipticCurves,EllipticCurvePointFormats`,
//! each list as decimal values joined by `-` in wire order with GREASE values removed, the whole
//! string hashed with MD5.
//!
//! JA4 (FoxIO, `technical_details/JA4.md`), three parts joined by `_`:
//! - `t`, the version, `d` or `i` (SNI or not), 2-digit cipher and extension counts, and the
//!   first and last characters of the first ALPN value;
//! - the first 12 hex digits of SHA-256 over the sorted cipher list;
//! - the same over the sorted extension list (without SNI and ALPN), then `_` and the signature
//!   algorithms in wire order.
//!
//! GREASE values are ignored everywhere.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::reader::Reader;
use super::{App, Malformed};

const CONTENT_HANDSHAKE: u8 = 22;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
/// RFC 8446 §5.1: a plaintext record carries at most 2^14 bytes.
const MAX_RECORD_LEN: usize = 1 << 14;

/// Extension types the parser reads.
pub mod ext {
    /// server_name (SNI).
    pub const SERVER_NAME: u16 = 0x0000;
    /// supported_groups (elliptic_curves in TLS 1.2 terms).
    pub const SUPPORTED_GROUPS: u16 = 0x000a;
    /// ec_point_formats.
    pub const EC_POINT_FORMATS: u16 = 0x000b;
    /// signature_algorithms.
    pub const SIGNATURE_ALGORITHMS: u16 = 0x000d;
    /// application_layer_protocol_negotiation (ALPN).
    pub const ALPN: u16 = 0x0010;
    /// supported_versions.
    pub const SUPPORTED_VERSIONS: u16 = 0x002b;
}

/// Whether `v` is a GREASE value (RFC 8701): `0x?a?a` with both bytes equal.
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && v >> 8 == v & 0xff
}

/// A list of big-endian `u16` values (cipher suites, groups, versions, signature algorithms),
/// borrowed from the packet; its length was checked to be even when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct U16List<'a>(&'a [u8]);

impl<'a> U16List<'a> {
    /// The values in wire order, GREASE included.
    pub fn iter(&self) -> impl Iterator<Item = u16> + 'a {
        self.0.chunks_exact(2).filter_map(|pair| match *pair {
            [hi, lo] => Some(u16::from_be_bytes([hi, lo])),
            _ => None,
        })
    }

    /// The values in wire order without GREASE.
    pub fn without_grease(&self) -> impl Iterator<Item = u16> + 'a {
        self.iter().filter(|&v| !is_grease(v))
    }

    /// Number of values, GREASE included.
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The extensions block of a ClientHello; its framing was checked when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Extensions<'a>(&'a [u8]);

impl<'a> Extensions<'a> {
    /// `(type, data)` of each extension in wire order, GREASE included.
    pub fn iter(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let mut r = Reader::new(self.0);
        std::iter::from_fn(move || {
            let kind = r.u16()?;
            let mut data = r.sub_u16()?;
            Some((kind, data.rest()))
        })
    }

    /// Extension types in wire order without GREASE.
    pub fn types(&self) -> impl Iterator<Item = u16> + 'a {
        self.iter().map(|(kind, _)| kind).filter(|&k| !is_grease(k))
    }
}

/// The ALPN protocol names offered, borrowed from the packet; framing checked when parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProtocolNames<'a>(&'a [u8]);

impl<'a> ProtocolNames<'a> {
    /// The names in preference order (`h2`, `http/1.1`, …), as raw bytes.
    pub fn iter(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let mut r = Reader::new(self.0);
        std::iter::from_fn(move || r.sub_u8().map(|mut name| name.rest()))
    }
}

/// A parsed ClientHello.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientHello<'a> {
    /// The record layer's version (often 0x0301 whatever the client supports).
    pub record_version: u16,
    /// The hello's `legacy_version` (0x0303 for TLS 1.2 and 1.3 clients).
    pub version: u16,
    /// The 32-byte client random.
    pub random: &'a [u8],
    /// The legacy session id (up to 32 bytes).
    pub session_id: &'a [u8],
    /// Offered cipher suites, wire order.
    pub cipher_suites: U16List<'a>,
    /// Offered compression methods.
    pub compression_methods: &'a [u8],
    /// Every extension, wire order.
    pub extensions: Extensions<'a>,
    /// The first host name in the server_name extension.
    pub server_name: Option<&'a str>,
    /// ALPN protocol names offered.
    pub alpn: ProtocolNames<'a>,
    /// The supported_versions extension's list (TLS 1.3 clients).
    pub supported_versions: U16List<'a>,
    /// The supported_groups extension's list.
    pub supported_groups: U16List<'a>,
    /// The ec_point_formats extension's list.
    pub ec_point_formats: &'a [u8],
    /// The signature_algorithms extension's list, wire order.
    pub signature_algorithms: U16List<'a>,
}

/// A JA3 fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Ja3 {
    /// The fingerprint string, e.g. `771,4865-4866,0-23-65281,29-23,0`.
    pub string: String,
    /// Lowercase hex MD5 of `string`: the value JA3 lists publish.
    pub hash: String,
}

impl<'a> ClientHello<'a> {
    /// The ALPN protocol names offered, in preference order.
    pub fn alpn(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        self.alpn.iter()
    }

    /// The highest non-GREASE version in supported_versions, else the hello's version: the
    /// version the client actually asks for.
    pub fn max_version(&self) -> u16 {
        self.supported_versions
            .without_grease()
            .max()
            .unwrap_or(self.version)
    }

    /// The JA3 fingerprint.
    pub fn ja3(&self) -> Ja3 {
        let mut string = String::with_capacity(256);
        let _ = write!(string, "{},", self.version);
        join_decimal(&mut string, self.cipher_suites.without_grease());
        string.push(',');
        join_decimal(&mut string, self.extensions.types());
        string.push(',');
        join_decimal(&mut string, self.supported_groups.without_grease());
        string.push(',');
        join_decimal(
            &mut string,
            self.ec_point_formats.iter().map(|&f| u16::from(f)),
        );
        let hash = hex(&Md5::digest(string.as_bytes()));
        Ja3 { string, hash }
    }

    /// The JA4 fingerprint (TLS over TCP), e.g. `t13d1516h2_8daaf6152771_e5627efa2ab1`.
    pub fn ja4(&self) -> String {
        let mut ciphers: Vec<u16> = self.cipher_suites.without_grease().collect();
        let mut extensions: Vec<u16> = self.extensions.types().collect();
        let sni = if extensions.contains(&ext::SERVER_NAME) {
            'd'
        } else {
            'i'
        };
        let mut ja4 = String::with_capacity(36);
        let _ = write!(
            ja4,
            "t{}{sni}{:02}{:02}{}_",
            ja4_version(self.max_version()),
            ciphers.len().min(99),
            extensions.len().min(99),
            ja4_alpn(self.alpn().next().unwrap_or_default()),
        );

        ciphers.sort_unstable();
        let mut list = String::with_capacity(5 * ciphers.len().max(extensions.len()) + 64);
        join_hex(&mut list, ciphers.iter().copied());
        push_truncated_sha256(&mut ja4, &list);
        ja4.push('_');

        extensions.retain(|&e| e != ext::SERVER_NAME && e != ext::ALPN);
        extensions.sort_unstable();
        list.clear();
        join_hex(&mut list, extensions.iter().copied());
        let mut algorithms = self.signature_algorithms.without_grease().peekable();
        if !list.is_empty() && algorithms.peek().is_some() {
            list.push('_');
            join_hex(&mut list, algorithms);
        }
        push_truncated_sha256(&mut ja4, &list);
        ja4
    }
}

/// JA4's two-character version.
fn ja4_version(version: u16) -> &'static str {
    match version {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// JA4's first and last characters of the first ALPN value: the characters themselves when both
/// are ASCII alphanumeric, else the first and last hex digits of the value; `00` when empty.
fn ja4_alpn(value: &[u8]) -> String {
    let (Some(&first), Some(&last)) = (value.first(), value.last()) else {
        return "00".into();
    };
    if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
        [char::from(first), char::from(last)].iter().collect()
    } else {
        let digit = |n: u8| char::from_digit(u32::from(n & 0x0f), 16).unwrap_or('0');
        [digit(first >> 4), digit(last)].iter().collect()
    }
}

fn join_decimal(out: &mut String, values: impl Iterator<Item = u16>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push('-');
        }
        let _ = write!(out, "{v}");
    }
}

fn join_hex(out: &mut String, values: impl Iterator<Item = u16>) {
    for (i, v) in values.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{v:04x}");
    }
}

/// Appends the first 12 hex digits of SHA-256 of `list`, or twelve zeros for an empty list (JA4
/// marks "nothing there" that way rather than hashing the empty string).
fn push_truncated_sha256(out: &mut String, list: &str) {
    if list.is_empty() {
        out.push_str("000000000000");
        return;
    }
    let digest = Sha256::digest(list.as_bytes());
    out.push_str(&hex(digest.get(..6).unwrap_or_default()));
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// What the start of a TCP payload holds.
enum Record<'a> {
    Hello(ClientHello<'a>),
    /// A ClientHello record ending `needed` bytes from the payload start, past this segment.
    Partial(usize),
    /// Another record or handshake type, or a ClientHello split over several records (which
    /// this zero-copy parser does not join).
    Other,
}

/// Whether `payload` starts like a TLS handshake record (content type 22, major version 3).
pub(crate) fn looks_like_handshake(payload: &[u8]) -> bool {
    matches!(payload, [CONTENT_HANDSHAKE, 3, ..])
}

/// Reads a ClientHello at the start of a TCP payload, for [`super::decode`].
pub(crate) fn sniff(payload: &[u8]) -> Result<Option<App<'_>>, Malformed> {
    Ok(match record(payload)? {
        Record::Hello(hello) => Some(App::TlsClientHello(Box::new(hello))),
        Record::Partial(needed) => Some(App::TlsClientHelloPartial { needed }),
        Record::Other => None,
    })
}

/// Parses a ClientHello from bytes that start with its TLS record (a TCP payload, or the
/// reassembled start of a stream). `Ok(None)` when the bytes hold another record or handshake
/// type, or not all of the ClientHello; `Err(BadTls)` when a ClientHello is there but broken.
pub fn parse_client_hello(data: &[u8]) -> Result<Option<ClientHello<'_>>, Malformed> {
    Ok(match record(data)? {
        Record::Hello(hello) => Some(hello),
        Record::Partial(_) | Record::Other => None,
    })
}

fn record(data: &[u8]) -> Result<Record<'_>, Malformed> {
    let mut r = Reader::new(data);
    let (Some(CONTENT_HANDSHAKE), Some(record_version @ 0x0300..=0x0304), Some(len)) =
        (r.u8(), r.u16(), r.u16())
    else {
        return Ok(Record::Other);
    };
    let len = usize::from(len);
    match r.peek_rest().first() {
        Some(&HANDSHAKE_CLIENT_HELLO) => {}
        Some(_) => return Ok(Record::Other),
        None if len > 0 => return Ok(Record::Partial(5 + len)),
        None => return Err(Malformed::BadTls),
    }
    if len > MAX_RECORD_LEN {
        return Err(Malformed::BadTls);
    }
    let Some(mut body) = r.sub(len) else {
        return Ok(Record::Partial(5 + len));
    };
    body.skip(1).ok_or(Malformed::BadTls)?; // handshake type, checked above
    let hello_len = body.u24().ok_or(Malformed::BadTls)?;
    let Some(hello) = body.take(hello_len as usize) else {
        return Ok(Record::Other);
    };
    client_hello(record_version, hello)
        .map(Record::Hello)
        .ok_or(Malformed::BadTls)
}

fn client_hello(record_version: u16, hello: &[u8]) -> Option<ClientHello<'_>> {
    let mut r = Reader::new(hello);
    let version = r.u16()?;
    let random = r.take(32)?;
    let session_id = r.sub_u8()?.rest();
    let cipher_suites = r.sub_u16()?.rest();
    let compression_methods = r.sub_u8()?.rest();
    if session_id.len() > 32
        || cipher_suites.is_empty()
        || cipher_suites.len() % 2 != 0
        || compression_methods.is_empty()
    {
        return None;
    }
    let mut out = ClientHello {
        record_version,
        version,
        random,
        session_id,
        cipher_suites: U16List(cipher_suites),
        compression_methods,
        extensions: Extensions::default(),
        server_name: None,
        alpn: ProtocolNames::default(),
        supported_versions: U16List::default(),
        supported_groups: U16List::default(),
        ec_point_formats: &[],
        signature_algorithms: U16List::default(),
    };
    // Hellos from before TLS 1.2 may end here, with no extensions block at all.
    if r.is_empty() {
        return Some(out);
    }
    let block = r.sub_u16()?.rest();
    if !r.is_empty() {
        return None;
    }
    out.extensions = Extensions(block);
    let mut exts = Reader::new(block);
    let mut seen = Seen::default();
    while !exts.is_empty() {
        let kind = exts.u16()?;
        let mut data = exts.sub_u16()?;
        // A repeated extension is illegal (RFC 8446 §4.2); the first one counts.
        if !seen.first(kind) {
            continue;
        }
        match kind {
            ext::SERVER_NAME => out.server_name = server_name(data.sub_u16()?)?,
            ext::ALPN => out.alpn = protocol_names(data.sub_u16()?)?,
            ext::SUPPORTED_VERSIONS => out.supported_versions = u16_list(data.sub_u8()?)?,
            ext::SUPPORTED_GROUPS => out.supported_groups = u16_list(data.sub_u16()?)?,
            ext::EC_POINT_FORMATS => out.ec_point_formats = data.sub_u8()?.rest(),
            ext::SIGNATURE_ALGORITHMS => out.signature_algorithms = u16_list(data.sub_u16()?)?,
            _ => data.skip(data.left())?,
        }
        if !data.is_empty() {
            return None;
        }
    }
    Some(out)
}

/// Which of the extensions the parser reads it has seen, so the first of each counts.
#[derive(Default)]
struct Seen(u8);

impl Seen {
    fn first(&mut self, kind: u16) -> bool {
        let bit = match kind {
            ext::SERVER_NAME => 1,
            ext::ALPN => 2,
            ext::SUPPORTED_VERSIONS => 4,
            ext::SUPPORTED_GROUPS => 8,
            ext::EC_POINT_FORMATS => 16,
            ext::SIGNATURE_ALGORITHMS => 32,
            _ => return true,
        };
        let first = self.0 & bit == 0;
        self.0 |= bit;
        first
    }
}

/// The first host_name entry of a server_name list. `None` (outer) when the list is broken or
/// the name is not UTF-8 (it must be ASCII).
fn server_name(mut list: Reader<'_>) -> Option<Option<&str>> {
    let mut host = None;
    while !list.is_empty() {
        let name_type = list.u8()?;
        let name = list.sub_u16()?.rest();
        if name_type == 0 && host.is_none() {
            host = Some(std::str::from_utf8(name).ok()?);
        }
    }
    Some(host)
}

fn protocol_names(list: Reader<'_>) -> Option<ProtocolNames<'_>> {
    let bytes = list.peek_rest();
    let mut check = list;
    while !check.is_empty() {
        check.sub_u8()?;
    }
    Some(ProtocolNames(bytes))
}

fn u16_list(mut list: Reader<'_>) -> Option<U16List<'_>> {
    let bytes = list.rest();
    (bytes.len() % 2 == 0).then_some(U16List(bytes))
}

#[cfg(test)]
mod tests {
    use super::super::build::{self, HelloSpec};
    use super::*;

    /// A Chrome 143 (Android) ClientHello, rebuilt field by field from the decoded hello that
    /// tls.browserleaks.com returned for it (the `tls.md` capture in the public service0427/
    /// v2_cp_app repository): same GREASE values, cipher and extension order, groups, point
    /// formats, versions and signature algorithms; key shares and the ECH payload have their
    /// published lengths with zeroed contents, which no fingerprint reads. The expected JA3 and
    /// JA4 below are the values browserleaks published for that hello, not outputs of this
    /// code; the JA3 string was also checked by hashing it with an independent MD5 (Python's
    /// hashlib).
    fn chrome_143() -> HelloSpec {
        let mut key_share = Vec::new();
        for (group, len) in [(0x3a3a_u16, 1_u16), (4588, 1216), (29, 32)] {
            key_share.extend_from_slice(&group.to_be_bytes());
            key_share.extend_from_slice(&len.to_be_bytes());
            key_share.resize(key_share.len() + usize::from(len), 0);
        }
        let mut ech = vec![0, 0, 1, 0, 1, 0xfe, 0, 32];
        ech.resize(ech.len() + 32, 0);
        ech.extend_from_slice(&144u16.to_be_bytes());
        ech.resize(ech.len() + 144, 0);
        HelloSpec {
            record_version: 0x0301,
            version: 0x0303,
            session_id: vec![0x26; 32],
            ciphers: vec![
                43690, 4865, 4866, 4867, 49195, 49199, 49196, 49200, 52393, 52392, 49171, 49172,
                156, 157, 47, 53,
            ],
            extensions: vec![
                (19018, vec![]),
                (45, vec![1, 1]),
                (51, build::prefixed16(&key_share)),
                (16, build::alpn(&[b"h2", b"http/1.1"])),
                (65037, ech),
                (23, vec![]),
                (17613, build::prefixed16(&[2, b'h', b'2'])),
                (0, build::sni("tls-outer.browserleaks.com")),
                (11, vec![1, 0]),
                (10, build::u16s16(&[14906, 4588, 29, 23, 24])),
                (43, build::u16s8(&[27242, 772, 771])),
                (65281, vec![0]),
                (35, vec![]),
                (18, vec![]),
                (5, vec![1, 0, 0, 0, 0]),
                (
                    13,
                    build::u16s16(&[1027, 2052, 1025, 1283, 2053, 1281, 2054, 1537]),
                ),
                (27, vec![2, 0, 2]),
                (27242, vec![0]),
            ],
        }
    }

    #[test]
    fn chrome_client_hello_matches_published_ja3_and_ja4() {
        let record = chrome_143().record();
        let hello = parse_client_hello(&record).unwrap().unwrap();
        assert_eq!(hello.server_name, Some("tls-outer.browserleaks.com"));
        let alpn: Vec<&[u8]> = hello.alpn().collect();
        assert_eq!(alpn, [&b"h2"[..], b"http/1.1"]);
        assert_eq!(hello.max_version(), 0x0304);
        let ja3 = hello.ja3();
        assert_eq!(
            ja3.string,
            "771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,\
             45-51-16-65037-23-17613-0-11-10-43-65281-35-18-5-13-27,4588-29-23-24,0"
        );
        assert_eq!(ja3.hash, "98487aa16281980e7d1120d399efb6a4");
        assert_eq!(hello.ja4(), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
    }

    #[test]
    fn tls12_hello_without_sni_alpn_or_signature_algorithms() {
        // Expected values computed independently from the JA3/JA4 definitions with Python:
        // md5("771,47-53-10,10-11,23-24,0"), sha256("000a,002f,0035")[:12] and
        // sha256("000a,000b")[:12].
        let spec = HelloSpec {
            record_version: 0x0301,
            version: 0x0303,
            session_id: vec![],
            ciphers: vec![0x002f, 0x0a0a, 0x0035, 0x000a],
            extensions: vec![
                (10, build::u16s16(&[23, 24])),
                (0x1a1a, vec![]),
                (11, vec![1, 0]),
            ],
        };
        let record = spec.record();
        let hello = parse_client_hello(&record).unwrap().unwrap();
        assert_eq!(hello.server_name, None);
        let ja3 = hello.ja3();
        assert_eq!(ja3.string, "771,47-53-10,10-11,23-24,0");
        assert_eq!(ja3.hash, "64bec183d06d053fcd8877c96c00c1e4");
        assert_eq!(hello.ja4(), "t12i030200_5704bdfc91c6_33a13ba74d1c");
    }

    #[test]
    fn hello_without_extensions_hashes_to_zeros() {
        let spec = HelloSpec {
            record_version: 0x0300,
            version: 0x0300,
            session_id: vec![],
            ciphers: vec![0x0a0a],
            extensions: vec![],
        };
        let mut record = spec.record();
        // Drop the (empty) extensions block: pre-TLS 1.2 hellos may end after compression.
        record.truncate(record.len() - 2);
        let len = (record.len() - 5) as u16;
        record[3..5].copy_from_slice(&len.to_be_bytes());
        record[6..9].copy_from_slice(&u32::from(len - 4).to_be_bytes()[1..]);
        let hello = parse_client_hello(&record).unwrap().unwrap();
        assert_eq!(hello.ja3().string, "768,,,,");
        assert_eq!(hello.ja4(), "ts3i000000_000000000000_000000000000");
    }

    #[test]
    fn ja4_alpn_characters_follow_the_spec_examples() {
        assert_eq!(ja4_alpn(b"h2"), "h2");
        assert_eq!(ja4_alpn(b"http/1.1"), "h1");
        assert_eq!(ja4_alpn(b"h"), "hh");
        assert_eq!(ja4_alpn(b""), "00");
        assert_eq!(ja4_alpn(&[0xab]), "ab");
        assert_eq!(ja4_alpn(&[0xab, 0xcd]), "ad");
        assert_eq!(ja4_alpn(&[0x30, 0xab]), "3b");
        assert_eq!(ja4_alpn(&[0x30, 0x31, 0xab, 0xcd]), "3d");
        assert_eq!(ja4_alpn(&[0x30, 0xab, 0xcd, 0x31]), "01");
    }

    #[test]
    fn grease_values_are_recognised() {
        let grease: Vec<u16> = (0..=0xffff_u16).filter(|&v| is_grease(v)).collect();
        assert_eq!(grease.len(), 16);
        assert_eq!(grease[0], 0x0a0a);
        assert_eq!(grease[15], 0xfafa);
        assert!(!is_grease(0x0a1a));
    }

    #[test]
    fn a_hello_continuing_past_the_segment_is_partial() {
        let record = chrome_143().record();
        match sniff(&record[..1400]).unwrap() {
            Some(App::TlsClientHelloPartial { needed }) => assert_eq!(needed, record.len()),
            other => panic!("{other:?}"),
        }
        assert!(parse_client_hello(&record[..1400]).unwrap().is_none());
    }

    #[test]
    fn other_records_are_not_hellos() {
        // A ServerHello handshake and an application-data record.
        assert!(sniff(&[22, 3, 3, 0, 4, 2, 0, 0, 0]).unwrap().is_none());
        assert!(sniff(&[23, 3, 3, 0, 1, 0]).unwrap().is_none());
        // A hello split over two records is left to a reassembler.
        assert!(sniff(&[22, 3, 1, 0, 4, 1, 0, 1, 0, 0, 0])
            .unwrap()
            .is_none());
    }

    #[test]
    fn broken_hellos_are_malformed() {
        let record = chrome_143().record();
        // Shorten the handshake length by one: the hello then ends inside an extension.
        let mut short = record.clone();
        let hello_len = u32::from_be_bytes([0, short[6], short[7], short[8]]) - 1;
        short[6..9].copy_from_slice(&hello_len.to_be_bytes()[1..]);
        assert_eq!(parse_client_hello(&short), Err(Malformed::BadTls));
        // An odd-length cipher list.
        let spec = HelloSpec {
            ciphers: vec![],
            ..chrome_143()
        };
        let mut odd = spec.record();
        let at = 5 + 4 + 2 + 32 + 1 + 32;
        odd[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
        assert_eq!(parse_client_hello(&odd), Err(Malformed::BadTls));
        // An oversized record.
        assert_eq!(
            parse_client_hello(&[22, 3, 1, 0x48, 0x01, 1]),
            Err(Malformed::BadTls)
        );
        // A non-UTF-8 server name.
        let spec = HelloSpec {
            extensions: vec![(0, build::sni_bytes(b"\xff.example"))],
            ..chrome_143()
        };
        assert_eq!(parse_client_hello(&spec.record()), Err(Malformed::BadTls));
    }
}
