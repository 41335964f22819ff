//! DNS messages (RFC 1035): header, questions and answer records, with compressed names followed
//! under loop and depth bounds.
//!
//! A hostile message can point a name at itself or bounce between two pointers forever. Every
//! pointer here must go strictly backwards from the previous one (which is all a real compressor
//! ever writes: it points at names already written), so a walk always ends; a cap on hops and on
//! the name's length bound the work besides. Record counts are capped too, so the cost of one
//! message is bounded whatever its header claims.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::reader::Reader;
use super::Malformed;

/// Resource record types the decoder reads the data of.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Domain name pointer.
    pub const PTR: u16 = 12;
    /// Mail exchange.
    pub const MX: u16 = 15;
    /// Text strings.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
}

/// Questions read from one message; real queries carry one.
pub const MAX_QUESTIONS: usize = 16;
/// Answer records read from one message; the rest are counted in the header only.
pub const MAX_ANSWERS: usize = 32;
/// Pointers followed while reading one name.
const MAX_POINTER_HOPS: usize = 32;
/// RFC 1035: a name is at most 255 octets on the wire.
const MAX_NAME_WIRE_LEN: usize = 255;
const HEADER_LEN: usize = 12;

/// A DNS message: header, questions and answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns<'a> {
    /// Transaction id.
    pub id: u16,
    /// A response (QR bit set), not a query.
    pub response: bool,
    /// Operation code (0 query, 4 notify, 5 update, …).
    pub opcode: u8,
    /// Authoritative answer.
    pub authoritative: bool,
    /// Truncated: the answer did not fit and the client should retry over TCP.
    pub truncated: bool,
    /// Recursion desired.
    pub recursion_desired: bool,
    /// Recursion available.
    pub recursion_available: bool,
    /// Response code (0 no error, 2 server failure, 3 NXDOMAIN, …).
    pub rcode: u8,
    /// Question count from the header.
    pub question_count: u16,
    /// Answer count from the header.
    pub answer_count: u16,
    /// Authority count from the header.
    pub authority_count: u16,
    /// Additional count from the header.
    pub additional_count: u16,
    /// The questions, at most [`MAX_QUESTIONS`].
    pub questions: Vec<DnsQuestion>,
    /// The answer records, at most [`MAX_ANSWERS`]; none are read when the message has more
    /// than [`MAX_QUESTIONS`] questions.
    pub answers: Vec<DnsAnswer<'a>>,
}

/// One question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuestion {
    /// The name asked about, see [`DnsAnswer::name`] for its form.
    pub name: String,
    /// Query type (1 A, 28 AAAA, 16 TXT, 255 ANY, …).
    pub qtype: u16,
    /// Query class (1 IN; mDNS sets the top bit to ask for a unicast reply).
    pub qclass: u16,
}

/// One answer record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer<'a> {
    /// The owner name, decompressed, labels joined by `.`; the root is `.`. Bytes outside
    /// printable ASCII, and `.` or `\` inside a label, are escaped as `\DDD` / `\.` / `\\`
    /// (as `dig` prints them), so a label's bytes can never forge a label boundary.
    pub name: String,
    /// Record type.
    pub rtype: u16,
    /// Record class (1 IN; mDNS uses the top bit as cache-flush).
    pub class: u16,
    /// Time to live, seconds.
    pub ttl: u32,
    /// The record data.
    pub data: DnsData<'a>,
}

/// Record data, read for the common types.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DnsData<'a> {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// An IPv6 address.
    Aaaa(Ipv6Addr),
    /// A canonical name.
    Cname(String),
    /// A name server.
    Ns(String),
    /// A pointer (reverse lookup) name.
    Ptr(String),
    /// A mail exchange.
    Mx {
        /// Preference, lower first.
        preference: u16,
        /// The exchange's name.
        exchange: String,
    },
    /// Text strings.
    Txt(DnsTxt<'a>),
    /// Any other type's raw data.
    Other(&'a [u8]),
}

/// The data of a TXT record: one or more length-prefixed strings (checked when parsed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DnsTxt<'a>(&'a [u8]);

impl<'a> DnsTxt<'a> {
    /// The strings, in order, as raw bytes.
    pub fn strings(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut r = Reader::new(self.0);
        std::iter::from_fn(move || r.sub_u8().map(|mut s| s.rest()))
    }

    /// The raw record data.
    pub fn raw(&self) -> &'a [u8] {
        self.0
    }
}

/// Parses a DNS message as carried over UDP.
pub fn parse(msg: &[u8]) -> Result<Dns<'_>, Malformed> {
    parse_message(msg).ok_or(Malformed::BadDns)
}

/// Parses a DNS message as carried over TCP (after its 2-byte length prefix). `None` unless a
/// whole message is there: a segment from the middle of a stream is not malformed, only unread.
pub(crate) fn parse_tcp(payload: &[u8]) -> Option<Dns<'_>> {
    let mut r = Reader::new(payload);
    let mut msg = r.sub_u16()?;
    parse_message(msg.rest())
}

fn parse_message(msg: &[u8]) -> Option<Dns<'_>> {
    let mut r = Reader::new(msg);
    let id = r.u16()?;
    let flags = r.u16()?;
    let question_count = r.u16()?;
    let answer_count = r.u16()?;
    let authority_count = r.u16()?;
    let additional_count = r.u16()?;
    debug_assert_eq!(r.used(), HEADER_LEN);

    let mut questions = Vec::with_capacity(usize::from(question_count).min(MAX_QUESTIONS));
    for _ in 0..usize::from(question_count).min(MAX_QUESTIONS) {
        let name = read_name(msg, &mut r)?;
        let qtype = r.u16()?;
        let qclass = r.u16()?;
        questions.push(DnsQuestion {
            name,
            qtype,
            qclass,
        });
    }
    let mut answers = Vec::new();
    if usize::from(question_count) <= MAX_QUESTIONS {
        let n = usize::from(answer_count).min(MAX_ANSWERS);
        answers.reserve_exact(n);
        for _ in 0..n {
            answers.push(read_answer(msg, &mut r)?);
        }
    }
    Some(Dns {
        id,
        response: flags & 0x8000 != 0,
        opcode: ((flags >> 11) & 0x0f) as u8,
        authoritative: flags & 0x0400 != 0,
        truncated: flags & 0x0200 != 0,
        recursion_desired: flags & 0x0100 != 0,
        recursion_available: flags & 0x0080 != 0,
        rcode: (flags & 0x000f) as u8,
        question_count,
        answer_count,
        authority_count,
        additional_count,
        questions,
        answers,
    })
}

fn read_answer<'a>(msg: &'a [u8], r: &mut Reader<'a>) -> Option<DnsAnswer<'a>> {
    let name = read_name(msg, r)?;
    let rtype = r.u16()?;
    let class = r.u16()?;
    let ttl = r.u32()?;
    let rdata_len = usize::from(r.u16()?);
    let rdata_start = r.used();
    let rdata = r.take(rdata_len)?;
    let rdata_end = r.used();
    // A name inside record data may be compressed, so it is read against the whole message,
    // but its own bytes must stay inside the record.
    let name_in_rdata = |skip: usize| -> Option<String> {
        let mut nr = Reader::new(msg);
        nr.skip(rdata_start + skip)?;
        let name = read_name(msg, &mut nr)?;
        (nr.used() == rdata_end).then_some(name)
    };
    let data = match rtype {
        rtype::A => DnsData::A(Ipv4Addr::from(<[u8; 4]>::try_from(rdata).ok()?)),
        rtype::AAAA => DnsData::Aaaa(Ipv6Addr::from(<[u8; 16]>::try_from(rdata).ok()?)),
        rtype::CNAME => DnsData::Cname(name_in_rdata(0)?),
        rtype::NS => DnsData::Ns(name_in_rdata(0)?),
        rtype::PTR => DnsData::Ptr(name_in_rdata(0)?),
        rtype::MX => DnsData::Mx {
            preference: Reader::new(rdata).u16()?,
            exchange: name_in_rdata(2)?,
        },
        rtype::TXT => {
            let mut strings = Reader::new(rdata);
            while !strings.is_empty() {
                strings.sub_u8()?;
            }
            DnsData::Txt(DnsTxt(rdata))
        }
        _ => DnsData::Other(rdata),
    };
    Some(DnsAnswer {
        name,
        rtype,
        class,
        ttl,
        data,
    })
}

/// Reads a possibly compressed name at `r`'s position; `r` must read the whole message (so its
/// position is an offset into `msg`) and is left after the name's bytes in place.
fn read_name<'a>(msg: &'a [u8], r: &mut Reader<'a>) -> Option<String> {
    let mut name = String::new();
    let mut cur = r.clone();
    let mut jumped = false;
    // Each pointer must land strictly before the previous one (or before itself, for the
    // first), so the walk cannot loop.
    let mut limit = usize::MAX;
    let mut hops = 0;
    let mut wire_len = 1; // the root label
    loop {
        let at = cur.used();
        let len = cur.u8()?;
        match len & 0xc0 {
            0x00 if len == 0 => break,
            0x00 => {
                let label = cur.take(usize::from(len))?;
                wire_len += 1 + label.len();
                if wire_len > MAX_NAME_WIRE_LEN {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                push_label(&mut name, label);
            }
            0xc0 => {
                let target = usize::from(u16::from_be_bytes([len & 0x3f, cur.u8()?]));
                hops += 1;
                if target >= at.min(limit) || hops > MAX_POINTER_HOPS {
                    return None;
                }
                if !jumped {
                    *r = cur.clone();
                    jumped = true;
                }
                limit = target;
                cur = Reader::new(msg);
                cur.skip(target)?;
            }
            // 0x40 and 0x80 are the obsolete extended label types.
            _ => return None,
        }
    }
    if !jumped {
        *r = cur;
    }
    if name.is_empty() {
        name.push('.');
    }
    Some(name)
}

fn push_label(name: &mut String, label: &[u8]) {
    for &b in label {
        match b {
            b'.' | b'\\' => {
                name.push('\\');
                name.push(char::from(b));
            }
            0x21..=0x7e => name.push(char::from(b)),
            _ => {
                let _ = write!(name, "\\{b:03}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::build;
    use super::*;

    #[test]
    fn query_header_and_question_are_read() {
        let msg = build::dns_query(0xbeef, "www.example.com", rtype::AAAA);
        let dns = parse(&msg).unwrap();
        assert_eq!(dns.id, 0xbeef);
        assert!(!dns.response && dns.recursion_desired);
        assert_eq!((dns.opcode, dns.rcode, dns.question_count), (0, 0, 1));
        assert_eq!(
            dns.questions,
            [DnsQuestion {
                name: "www.example.com".into(),
                qtype: rtype::AAAA,
                qclass: 1
            }]
        );
        assert!(dns.answers.is_empty());
    }

    #[test]
    fn response_answers_follow_compression_pointers() {
        let msg = build::dns_response();
        let dns = parse(&msg).unwrap();
        assert!(dns.response && dns.recursion_available);
        assert_eq!(dns.rcode, 0);
        assert_eq!(dns.questions[0].name, "www.example.com");
        let answers: Vec<_> = dns
            .answers
            .iter()
            .map(|a| (a.name.as_str(), a.rtype, a.ttl, a.data.clone()))
            .collect();
        assert_eq!(
            answers,
            [
                (
                    "www.example.com",
                    rtype::CNAME,
                    300,
                    DnsData::Cname("web.example.com".into())
                ),
                (
                    "web.example.com",
                    rtype::A,
                    60,
                    DnsData::A(Ipv4Addr::new(93, 184, 216, 34))
                ),
                (
                    "web.example.com",
                    rtype::AAAA,
                    60,
                    DnsData::Aaaa("2606:2800:220:1::1".parse().unwrap())
                ),
                (
                    "example.com",
                    rtype::TXT,
                    3600,
                    DnsData::Txt(DnsTxt(b"\x05hello\x00\x03abc"))
                ),
                (
                    "example.com",
                    rtype::MX,
                    3600,
                    DnsData::Mx {
                        preference: 10,
                        exchange: "mail.example.com".into()
                    }
                ),
            ]
        );
        let DnsData::Txt(txt) = &dns.answers[3].data else {
            panic!("not txt")
        };
        let strings: Vec<&[u8]> = txt.strings().collect();
        assert_eq!(strings, [&b"hello"[..], b"", b"abc"]);
    }

    #[test]
    fn compression_loops_terminate() {
        // A name that is a pointer to itself.
        let mut msg = build::dns_header(1, 0x0100, 1, 0);
        msg.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&msg), Err(Malformed::BadDns));

        // Two names pointing at each other: label "a" then a pointer to the second, whose
        // pointer leads back to the first.
        let mut msg = build::dns_header(1, 0x8100, 1, 1);
        msg.extend_from_slice(&[1, b'a', 0xc0, 22, 0, 1, 0, 1]); // question at 12, ptr -> 22
        msg.extend_from_slice(&[1, b'b', 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 0, 0, 0]); // at 20
        assert_eq!(parse(&msg), Err(Malformed::BadDns));

        // A forward pointer.
        let mut msg = build::dns_header(1, 0x0100, 1, 0);
        msg.extend_from_slice(&[0xc0, 14, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&msg), Err(Malformed::BadDns));
    }

    #[test]
    fn pointer_chains_are_bounded() {
        // Each name is one label plus a pointer to the previous name: legal, and deeper than
        // the hop cap allows.
        let mut msg = build::dns_header(1, 0x8100, 1, 40);
        msg.extend_from_slice(&[1, b'x', 0, 0, 1, 0, 1]);
        let mut prev = 12u16;
        for _ in 0..40 {
            let here = msg.len() as u16;
            msg.extend_from_slice(&[0xc0 | (prev >> 8) as u8, prev as u8]);
            msg.extend_from_slice(&[0, 5, 0, 1, 0, 0, 0, 1, 0, 2, 0xc0 | (here >> 8) as u8]);
            msg.push(here as u8);
            prev = here;
        }
        let Err(Malformed::BadDns) = parse(&msg) else {
            panic!("a chain of more than {MAX_POINTER_HOPS} pointers was followed");
        };
    }

    #[test]
    fn names_over_255_bytes_are_malformed() {
        let mut msg = build::dns_header(1, 0x0100, 1, 0);
        for _ in 0..5 {
            msg.push(63);
            msg.extend_from_slice(&[b'a'; 63]);
        }
        msg.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert_eq!(parse(&msg), Err(Malformed::BadDns));
    }

    #[test]
    fn label_bytes_are_escaped() {
        let mut msg = build::dns_header(1, 0x0100, 1, 0);
        msg.extend_from_slice(&[4, b'a', b'.', 0, b'\\', 0, 0, 16, 0, 1]);
        let dns = parse(&msg).unwrap();
        assert_eq!(dns.questions[0].name, "a\\.\\000\\\\");
        let mut root = build::dns_header(1, 0x0100, 1, 0);
        root.extend_from_slice(&[0, 0, 2, 0, 1]);
        assert_eq!(parse(&root).unwrap().questions[0].name, ".");
    }

    #[test]
    fn record_data_that_does_not_fit_its_type_is_malformed() {
        let mut msg = build::dns_header(1, 0x8180, 0, 1);
        msg.extend_from_slice(&[0, 0, 1, 0, 1, 0, 0, 0, 60, 0, 3, 1, 2, 3]); // A with 3 bytes
        assert_eq!(parse(&msg), Err(Malformed::BadDns));
        let mut msg = build::dns_header(1, 0x8180, 0, 1);
        msg.extend_from_slice(&[0, 0, 16, 0, 1, 0, 0, 0, 60, 0, 3, 5, b'a', b'b']); // TXT overrun
        assert_eq!(parse(&msg), Err(Malformed::BadDns));
        let mut msg = build::dns_header(1, 0x8180, 0, 1);
        // CNAME whose name runs past its record data.
        msg.extend_from_slice(&[0, 0, 5, 0, 1, 0, 0, 0, 60, 0, 2, 1, b'a', 0]);
        assert_eq!(parse(&msg), Err(Malformed::BadDns));
    }

    #[test]
    fn short_header_is_malformed() {
        assert_eq!(parse(&[0; 11]), Err(Malformed::BadDns));
        assert!(parse(&[0; 12]).is_ok());
    }

    #[test]
    fn question_counts_beyond_the_cap_are_not_all_read() {
        let mut msg = build::dns_header(1, 0x0100, 1000, 0);
        for _ in 0..1000 {
            msg.extend_from_slice(&[0, 0, 1, 0, 1]);
        }
        let dns = parse(&msg).unwrap();
        assert_eq!(
            (dns.questions.len(), dns.question_count),
            (MAX_QUESTIONS, 1000)
        );
    }

    #[test]
    fn dns_over_tcp_needs_a_whole_message() {
        let msg = build::dns_query(7, "example.org", rtype::A);
        let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&msg);
        assert_eq!(parse_tcp(&framed).unwrap().id, 7);
        assert!(parse_tcp(&framed[..framed.len() - 1]).is_none());
    }
}
