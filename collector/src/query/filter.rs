//! Filter expressions: the small language an analyst types (in the spirit of Kibana KQL and
//! Wireshark display filters) over the ECS dotted field names of stored events.
//!
//! ```text
//! expr    := or
//! or      := and ("or" and)*                       also `||`
//! and     := unary ("and" unary)*                  also `&&`
//! unary   := "not" unary | primary                 also `!`
//! primary := "(" expr ")" | "exists" FIELD | FIELD op value
//!          | FIELD "in" (CIDR | IP | "[" value ("," value)* "]")
//! op      := "=" | "==" | "!=" | "<" | "<=" | ">" | ">=" | "~"
//! value   := bare word | "quoted string" | 'quoted string'
//! ```
//!
//! Semantics, per event (its stored JSON parsed once into a `serde_json::Value`):
//! - a field resolves to every value on its path; arrays anywhere on the path are searched, so a
//!   comparison matches if any element matches;
//! - a field that is absent (or null) never matches a comparison; only `not` turns that around.
//!   `a != v` means "a is present and no value of a equals v";
//! - `=` compares strings exactly (IP addresses and RFC 3339 times by value, numbers
//!   numerically); `*` in an unquoted value is a wildcard (`host.name = web-*`), in a quoted value
//!   a literal star;
//! - `<`, `<=`, `>`, `>=` compare numbers, or RFC 3339 times (`@timestamp >= 2026-01-01T00:00:00Z`);
//! - `~` is a case-insensitive substring test;
//! - `in 10.0.0.0/8` tests an IPv4 or IPv6 range (IPv4-mapped IPv6 addresses count as IPv4).
//!
//! The parser takes bytes from outside (the API's query string): it never panics, bounds its
//! input length and nesting depth, and reports the column (in characters, from 1) of the problem.

use std::cmp::Ordering;
use std::fmt;
use std::net::IpAddr;

use palisade_wire::{EventKind, Severity, Timestamp};
use serde_json::Value;

/// Longest filter accepted, in bytes.
pub const MAX_FILTER_BYTES: usize = 8 * 1024;
/// Deepest nesting of parentheses and `not` accepted.
pub const MAX_DEPTH: usize = 64;

/// A filter that does not parse: what was expected, and where.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("filter: {message} at column {column}")]
pub struct FilterError {
    /// 1-based character column of the problem (one past the end when input ran out).
    pub column: usize,
    /// What was wrong or expected.
    pub message: String,
}

/// A parsed filter expression.
#[derive(Clone, Debug)]
pub struct Filter {
    expr: Expr,
    source: String,
}

/// The store-side narrowing a filter implies: conditions the whole expression requires, which
/// the store can test on segment headers without parsing events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pushdown {
    /// `event.dataset = palisade.<kind>` at the top level.
    pub kind: Option<EventKind>,
    /// `event.severity >= n` (or `> n`, `= n`) at the top level.
    pub min_severity: Option<Severity>,
    /// `agent.id = <id>` (no wildcard) at the top level.
    pub agent: Option<String>,
}

#[derive(Clone, Debug)]
enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Exists(Field),
    Cmp(Field, CmpOp, Box<Literal>),
    InCidr(Field, Cidr),
    InSet(Field, Vec<Literal>),
    Contains(Field, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn symbol(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A dotted field name with the byte ranges of its segments, so that a path through keys that
/// themselves contain dots (`labels."a.b"`) is a substring of the name, without allocating.
#[derive(Clone, Debug)]
struct Field {
    name: String,
    segments: Vec<(usize, usize)>,
}

impl Field {
    fn parse(name: &str) -> Option<Field> {
        let valid = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@');
        let mut segments = Vec::new();
        let mut start = 0;
        for part in name.split('.') {
            if part.is_empty() || !part.chars().all(valid) {
                return None;
            }
            segments.push((start, start + part.len()));
            start += part.len() + 1;
        }
        Some(Field {
            name: name.to_string(),
            segments,
        })
    }

    /// Every value the field names in `root`, arrays flattened.
    fn resolve<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        let mut out = Vec::new();
        self.collect(root, 0, &mut out);
        out
    }

    fn collect<'v>(&self, v: &'v Value, seg: usize, out: &mut Vec<&'v Value>) {
        if seg == self.segments.len() {
            flatten(v, out);
            return;
        }
        match v {
            Value::Object(map) => {
                let start = self.segments[seg].0;
                for (j, &(_, end)) in self.segments.iter().enumerate().skip(seg) {
                    if let Some(child) = self.name.get(start..end).and_then(|k| map.get(k)) {
                        self.collect(child, j + 1, out);
                    }
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.collect(item, seg, out);
                }
            }
            _ => {}
        }
    }
}

fn flatten<'v>(v: &'v Value, out: &mut Vec<&'v Value>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        Value::Null => {}
        other => out.push(other),
    }
}

/// A value as typed, with the readings of it the comparisons need, computed once.
#[derive(Clone, Debug)]
struct Literal {
    text: String,
    /// Unquoted and containing `*`.
    wildcard: bool,
    int: Option<i128>,
    float: Option<f64>,
    time: Option<i64>,
    ip: Option<IpAddr>,
}

impl Literal {
    fn new(text: String, quoted: bool) -> Literal {
        let wildcard = !quoted && text.contains('*');
        let int = text.parse::<i128>().ok();
        let float = text.parse::<f64>().ok().filter(|f| f.is_finite());
        let time = if looks_like_time(&text) {
            text.parse::<Timestamp>().ok().map(|t| t.nanos())
        } else {
            None
        };
        let ip = text.parse::<IpAddr>().ok().map(|ip| ip.to_canonical());
        Literal {
            text,
            wildcard,
            int,
            float,
            time,
            ip,
        }
    }

    fn equals(&self, v: &Value) -> bool {
        match v {
            Value::String(s) => {
                if self.wildcard {
                    return glob(&self.text, s);
                }
                if *s == self.text {
                    return true;
                }
                if let Some(ip) = self.ip {
                    return s.parse::<IpAddr>().is_ok_and(|x| x.to_canonical() == ip);
                }
                if let Some(t) = self.time {
                    return looks_like_time(s)
                        && s.parse::<Timestamp>().is_ok_and(|x| x.nanos() == t);
                }
                false
            }
            Value::Number(n) => {
                if self.wildcard {
                    return glob(&self.text, &n.to_string());
                }
                number_cmp(n, self) == Some(Ordering::Equal)
            }
            Value::Bool(b) => self
                .text
                .eq_ignore_ascii_case(if *b { "true" } else { "false" }),
            _ => false,
        }
    }

    fn compare(&self, v: &Value) -> Option<Ordering> {
        match v {
            Value::Number(n) => number_cmp(n, self),
            Value::String(s) => {
                if let Some(t) = self.time {
                    if looks_like_time(s) {
                        return s.parse::<Timestamp>().ok().map(|x| x.nanos().cmp(&t));
                    }
                }
                let f = self.float?;
                s.trim().parse::<f64>().ok()?.partial_cmp(&f)
            }
            _ => None,
        }
    }
}

/// Cheap pre-check so plain words are not handed to the RFC 3339 parser.
fn looks_like_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-'
}

/// `value <=> literal` for a JSON number: exact for integers, floating point otherwise.
fn number_cmp(n: &serde_json::Number, lit: &Literal) -> Option<Ordering> {
    let exact = n
        .as_i64()
        .map(i128::from)
        .or_else(|| n.as_u64().map(i128::from));
    match (exact, lit.int) {
        (Some(a), Some(b)) => Some(a.cmp(&b)),
        _ => n.as_f64()?.partial_cmp(&lit.float?),
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// An IPv4 or IPv6 range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, Some(p.parse::<u8>().ok()?)),
            None => (s.parse::<IpAddr>().ok()?, None),
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl Expr {
    fn eval(&self, event: &Value) -> bool {
        match self {
            Expr::And(a, b) => a.eval(event) && b.eval(event),
            Expr::Or(a, b) => a.eval(event) || b.eval(event),
            Expr::Not(e) => !e.eval(event),
            Expr::Exists(f) => !f.resolve(event).is_empty(),
            Expr::Cmp(f, op, lit) => {
                let values = f.resolve(event);
                match op {
                    CmpOp::Eq => values.iter().any(|v| lit.equals(v)),
                    CmpOp::Ne => !values.is_empty() && !values.iter().any(|v| lit.equals(v)),
                    CmpOp::Lt => values
                        .iter()
                        .any(|v| lit.compare(v) == Some(Ordering::Less)),
                    CmpOp::Le => values
                        .iter()
                        .any(|v| matches!(lit.compare(v), Some(Ordering::Less | Ordering::Equal))),
                    CmpOp::Gt => values
                        .iter()
                        .any(|v| lit.compare(v) == Some(Ordering::Greater)),
                    CmpOp::Ge => values.iter().any(|v| {
                        matches!(lit.compare(v), Some(Ordering::Greater | Ordering::Equal))
                    }),
                }
            }
            Expr::InCidr(f, cidr) => f.resolve(event).iter().any(|v| {
                v.as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok())
                    .is_some_and(|ip| cidr.contains(ip))
            }),
            Expr::InSet(f, set) => f
                .resolve(event)
                .iter()
                .any(|v| set.iter().any(|lit| lit.equals(v))),
            Expr::Contains(f, needle) => f.resolve(event).iter().any(|v| match v {
                Value::String(s) => s.to_lowercase().contains(needle.as_str()),
                Value::Number(n) => n.to_string().contains(needle.as_str()),
                Value::Bool(b) => b.to_string().contains(needle.as_str()),
                _ => false,
            }),
        }
    }

    fn conjuncts<'e>(&'e self, out: &mut Vec<&'e Expr>) {
        match self {
            Expr::And(a, b) => {
                a.conjuncts(out);
                b.conjuncts(out);
            }
            other => out.push(other),
        }
    }
}

impl Filter {
    /// Parses an expression.
    pub fn parse(source: &str) -> Result<Filter, FilterError> {
        if source.len() > MAX_FILTER_BYTES {
            return Err(FilterError {
                column: 1,
                message: format!("longer than {MAX_FILTER_BYTES} bytes"),
            });
        }
        let tokens = lex(source)?;
        let end = source.chars().count() + 1;
        let mut p = Parser {
            tokens,
            pos: 0,
            end,
            depth: 0,
        };
        let expr = p.or()?;
        if let Some(t) = p.peek() {
            return Err(p.error_at(
                t.column,
                format!(
                    "expected 'and', 'or' or the end, found {}",
                    t.kind.describe()
                ),
            ));
        }
        Ok(Filter {
            expr,
            source: source.to_string(),
        })
    }

    /// The expression as typed.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether the event (parsed JSON) matches.
    pub fn matches(&self, event: &Value) -> bool {
        self.expr.eval(event)
    }

    /// Whether the event given as stored JSON matches; JSON that does not parse never does.
    pub fn matches_json(&self, json: &[u8]) -> bool {
        serde_json::from_slice::<Value>(json).is_ok_and(|v| self.matches(&v))
    }

    /// Conditions every match satisfies that the store can check cheaply.
    pub fn pushdown(&self) -> Pushdown {
        let mut all = Vec::new();
        self.expr.conjuncts(&mut all);
        let mut out = Pushdown::default();
        for e in all {
            let Expr::Cmp(f, op, lit) = e else { continue };
            match (f.name.as_str(), op) {
                ("event.dataset", CmpOp::Eq)
                    if !lit.wildcard && lit.text.starts_with("palisade.") =>
                {
                    out.kind = out.kind.or_else(|| lit.text.parse().ok());
                }
                ("agent.id", CmpOp::Eq) if !lit.wildcard => {
                    out.agent.get_or_insert_with(|| lit.text.clone());
                }
                ("event.severity", CmpOp::Ge | CmpOp::Gt | CmpOp::Eq) => {
                    let Some(n) = lit.int else { continue };
                    let n = if *op == CmpOp::Gt { n + 1 } else { n };
                    let sev = u64::try_from(n).ok().and_then(Severity::from_number);
                    if let Some(s) = sev {
                        out.min_severity = Some(out.min_severity.map_or(s, |m| m.max(s)));
                    }
                }
                _ => {}
            }
        }
        out
    }
}

impl fmt::Display for Filter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl std::str::FromStr for Filter {
    type Err = FilterError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Filter::parse(s)
    }
}

// ---- lexer ----

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Op(CmpOp),
    Tilde,
    And,
    Or,
    Not,
    In,
    Exists,
    Word(String),
    Str(String),
}

impl Tok {
    fn describe(&self) -> String {
        match self {
            Tok::LParen => "'('".into(),
            Tok::RParen => "')'".into(),
            Tok::LBracket => "'['".into(),
            Tok::RBracket => "']'".into(),
            Tok::Comma => "','".into(),
            Tok::Op(op) => format!("'{}'", op.symbol()),
            Tok::Tilde => "'~'".into(),
            Tok::And => "'and'".into(),
            Tok::Or => "'or'".into(),
            Tok::Not => "'not'".into(),
            Tok::In => "'in'".into(),
            Tok::Exists => "'exists'".into(),
            Tok::Word(w) => format!("{:?}", truncate(w)),
            Tok::Str(s) => format!("string {:?}", truncate(s)),
        }
    }
}

fn truncate(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[derive(Clone, Debug)]
struct Token {
    kind: Tok,
    column: usize,
}

fn is_special(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '(' | ')' | '[' | ']' | ',' | '=' | '!' | '<' | '>' | '~' | '"' | '\'' | '&' | '|'
        )
}

fn lex(src: &str) -> Result<Vec<Token>, FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |column: usize, message: String| FilterError { column, message };
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        let next = chars.get(i + 1).copied();
        let (kind, len) = match c {
            c if c.is_whitespace() => {
                i += 1;
                continue;
            }
            '(' => (Tok::LParen, 1),
            ')' => (Tok::RParen, 1),
            '[' => (Tok::LBracket, 1),
            ']' => (Tok::RBracket, 1),
            ',' => (Tok::Comma, 1),
            '~' => (Tok::Tilde, 1),
            '=' if next == Some('=') => (Tok::Op(CmpOp::Eq), 2),
            '=' => (Tok::Op(CmpOp::Eq), 1),
            '!' if next == Some('=') => (Tok::Op(CmpOp::Ne), 2),
            '!' => (Tok::Not, 1),
            '<' if next == Some('=') => (Tok::Op(CmpOp::Le), 2),
            '<' => (Tok::Op(CmpOp::Lt), 1),
            '>' if next == Some('=') => (Tok::Op(CmpOp::Ge), 2),
            '>' => (Tok::Op(CmpOp::Gt), 1),
            '&' if next == Some('&') => (Tok::And, 2),
            '|' if next == Some('|') => (Tok::Or, 2),
            '&' | '|' => {
                return Err(err(
                    column,
                    format!("expected '{c}{c}', found a single '{c}'"),
                ))
            }
            '"' | '\'' => {
                let (s, len) = lex_string(&chars, i)?;
                (Tok::Str(s), len)
            }
            _ => {
                let len = chars[i..].iter().take_while(|&&c| !is_special(c)).count();
                let word: String = chars[i..i + len].iter().collect();
                let kind = match word.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "in" => Tok::In,
                    "exists" => Tok::Exists,
                    _ => Tok::Word(word),
                };
                (kind, len)
            }
        };
        out.push(Token { kind, column });
        i += len;
    }
    Ok(out)
}

/// A quoted string starting at `chars[start]`; returns its value and its length in characters.
fn lex_string(chars: &[char], start: usize) -> Result<(String, usize), FilterError> {
    let quote = chars[start];
    let mut s = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            c if c == quote => return Ok((s, i + 1 - start)),
            '\\' => {
                let column = i + 1;
                let bad = |message: String| FilterError { column, message };
                let e = chars
                    .get(i + 1)
                    .ok_or_else(|| bad("expected a character after '\\'".into()))?;
                i += 2;
                match e {
                    'n' => s.push('\n'),
                    't' => s.push('\t'),
                    'r' => s.push('\r'),
                    '0' => s.push('\0'),
                    '\\' | '"' | '\'' | '*' => s.push(*e),
                    'u' => {
                        let hex: String = chars.get(i..i + 4).unwrap_or(&[]).iter().collect();
                        let c = u32::from_str_radix(&hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .and_then(char::from_u32)
                            .ok_or_else(|| {
                                bad("expected four hex digits of a character after '\\u'".into())
                            })?;
                        s.push(c);
                        i += 4;
                    }
                    other => return Err(bad(format!("unknown escape '\\{other}'"))),
                }
            }
            c => {
                s.push(c);
                i += 1;
            }
        }
    }
    Err(FilterError {
        column: start + 1,
        message: format!("unterminated string (no closing {quote})"),
    })
}

// ---- parser ----

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
    /// Column just past the input, for "ran out" errors.
    end: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, kind: &Tok) -> bool {
        if self.peek().is_some_and(|t| t.kind == *kind) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    /// Column of the next token, or one past the end.
    fn here(&self) -> usize {
        self.peek().map_or(self.end, |t| t.column)
    }

    fn error_at(&self, column: usize, message: String) -> FilterError {
        FilterError { column, message }
    }

    /// "expected X, found Y" at the next token (or "the end").
    fn expected(&self, what: &str) -> FilterError {
        let found = self
            .peek()
            .map_or_else(|| "the end".to_string(), |t| t.kind.describe());
        let message = if self.peek().is_none() {
            what.to_string()
        } else {
            format!("{what}, found {found}")
        };
        self.error_at(self.here(), message)
    }

    fn enter(&mut self) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error_at(
                self.here(),
                format!("nesting deeper than {MAX_DEPTH} levels"),
            ));
        }
        Ok(())
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.and()?;
        while self.eat(&Tok::Or) {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut left = self.unary()?;
        while self.eat(&Tok::And) {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, FilterError> {
        if self.eat(&Tok::Not) {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, FilterError> {
        match self.peek().map(|t| t.kind.clone()) {
            Some(Tok::LParen) => {
                let open = self.here();
                self.pos += 1;
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                if !self.eat(&Tok::RParen) {
                    let mut e = self.expected("expected ')'");
                    if self.peek().is_none() {
                        e.message = format!("expected ')' to close the '(' at column {open}");
                    }
                    return Err(e);
                }
                Ok(inner)
            }
            Some(Tok::Exists) => {
                self.pos += 1;
                let field = self.field(" after 'exists'")?;
                Ok(Expr::Exists(field))
            }
            _ => self.comparison(),
        }
    }

    fn field(&mut self, context: &str) -> Result<Field, FilterError> {
        let column = self.here();
        match self.peek().map(|t| t.kind.clone()) {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Field::parse(&w).ok_or_else(|| {
                    self.error_at(
                        column,
                        format!("{:?} is not a field name (letters, digits, '_', '-', '@', separated by '.')", truncate(&w)),
                    )
                })
            }
            _ => Err(self.expected(&format!("expected a field name{context}"))),
        }
    }

    fn comparison(&mut self) -> Result<Expr, FilterError> {
        let field = self.field("")?;
        let op_column = self.here();
        let Some(op) = self.next() else {
            return Err(self.error_at(
                op_column,
                format!(
                    "expected an operator (=, !=, <, <=, >, >=, ~, in) after field '{}'",
                    truncate(&field.name)
                ),
            ));
        };
        match op.kind {
            Tok::Op(cmp) => {
                let (text, quoted) = self.value(&format!("after '{}'", cmp.symbol()))?;
                let lit = Literal::new(text, quoted);
                if !matches!(cmp, CmpOp::Eq | CmpOp::Ne)
                    && lit.float.is_none()
                    && lit.time.is_none()
                {
                    return Err(self.error_at(
                        self.tokens.get(self.pos - 1).map_or(self.end, |t| t.column),
                        format!(
                            "expected a number or an RFC 3339 time after '{}', found {:?}",
                            cmp.symbol(),
                            truncate(&lit.text)
                        ),
                    ));
                }
                Ok(Expr::Cmp(field, cmp, Box::new(lit)))
            }
            Tok::Tilde => {
                let (text, _) = self.value("after '~'")?;
                Ok(Expr::Contains(field, text.to_lowercase()))
            }
            Tok::In => {
                if self.eat(&Tok::LBracket) {
                    let mut set = Vec::new();
                    loop {
                        let (text, quoted) = self.value("in the list")?;
                        set.push(Literal::new(text, quoted));
                        if self.eat(&Tok::Comma) {
                            continue;
                        }
                        if self.eat(&Tok::RBracket) {
                            break;
                        }
                        return Err(self.expected("expected ',' or ']' in the list"));
                    }
                    return Ok(Expr::InSet(field, set));
                }
                let column = self.here();
                let (text, _) =
                    self.value("after 'in' (a CIDR range such as 10.0.0.0/8, or a list [a, b])")?;
                let cidr = Cidr::parse(&text).ok_or_else(|| {
                    self.error_at(
                        column,
                        format!(
                            "expected a CIDR range (10.0.0.0/8, fd00::/8) or a list [a, b] after 'in', found {:?}",
                            truncate(&text)
                        ),
                    )
                })?;
                Ok(Expr::InCidr(field, cidr))
            }
            other => Err(self.error_at(
                op.column,
                format!(
                    "expected an operator (=, !=, <, <=, >, >=, ~, in) after field '{}', found {}",
                    truncate(&field.name),
                    other.describe()
                ),
            )),
        }
    }

    /// A value: a bare word or a quoted string; returns (text, quoted).
    fn value(&mut self, context: &str) -> Result<(String, bool), FilterError> {
        match self.peek().map(|t| t.kind.clone()) {
            Some(Tok::Word(w)) => {
                self.pos += 1;
                Ok((w, false))
            }
            Some(Tok::Str(s)) => {
                self.pos += 1;
                Ok((s, true))
            }
            _ => Err(self.expected(&format!("expected a value {context}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event() -> Value {
        json!({
            "@timestamp": "2026-03-01T12:00:00.500000000Z",
            "agent": {"id": "probe-1"},
            "event": {"dataset": "palisade.alert", "severity": 3, "sequence": 42,
                      "category": ["network", "intrusion_detection"]},
            "source": {"ip": "10.1.2.3", "port": 51515},
            "destination": {"ip": "2001:db8::7", "port": 443},
            "host": {"name": "Web-01", "ip": ["192.168.1.5", "fe80::1"]},
            "message": "Port scan from 10.1.2.3: 100 ports",
            "labels": {"team.name": "blue", "empty": null},
            "network": {"transport": "tcp", "bytes": 18446744073709551615u64, "ratio": 0.25},
            "flags": [true, false],
            "nested": [{"a": 1}, {"a": [2, 3]}],
            "mapped": "::ffff:10.9.9.9"
        })
    }

    fn m(src: &str) -> bool {
        Filter::parse(src)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .matches(&event())
    }

    fn err(src: &str) -> FilterError {
        match Filter::parse(src) {
            Ok(f) => panic!("{src} parsed: {f:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn equality_on_strings_numbers_ips_times_and_bools() {
        assert!(m("agent.id = probe-1"));
        assert!(m("agent.id == \"probe-1\""));
        assert!(!m("agent.id = probe-2"));
        assert!(!m("agent.id = Probe-1"), "= is case-sensitive");
        assert!(m("event.severity = 3"));
        assert!(m("event.severity = 3.0"));
        assert!(m("source.port = \"51515\""));
        assert!(m("destination.ip = 2001:0db8:0::7"), "IPs compare by value");
        assert!(
            m("@timestamp = 2026-03-01T13:00:00.5+01:00"),
            "times compare by value"
        );
        assert!(
            m("network.bytes = 18446744073709551615"),
            "u64 compared exactly"
        );
        assert!(!m("network.bytes = 18446744073709551614"));
        assert!(m("network.ratio = 0.25"));
        assert!(m("flags = false") && m("flags = TRUE"));
    }

    #[test]
    fn not_equal_needs_the_field_and_no_equal_element() {
        assert!(m("agent.id != probe-2"));
        assert!(!m("agent.id != probe-1"));
        assert!(!m("missing.field != x"), "absent never matches");
        assert!(m("not missing.field = x"), "except under not");
        assert!(!m("host.ip != 192.168.1.5"), "one element equals");
        assert!(m("host.ip != 192.168.1.6"));
        assert!(!m("labels.empty != x"), "null counts as absent");
    }

    #[test]
    fn ordering_on_numbers_and_times() {
        assert!(m("event.severity >= 3") && m("event.severity > 2") && m("event.severity <= 3"));
        assert!(!m("event.severity > 3") && !m("event.severity < 3"));
        assert!(m("event.severity < 3.5"));
        assert!(m("source.port > 50000 and source.port < 60000"));
        assert!(m("@timestamp >= 2026-03-01T12:00:00Z"));
        assert!(m("@timestamp < 2026-03-01T12:00:00.500000001Z"));
        assert!(!m("@timestamp > 2026-03-01T12:00:00.5Z"));
        assert!(
            m("@timestamp > 2026-03-01T12:00:00+00:30"),
            "offsets honoured"
        );
        assert!(!m("agent.id > 3"), "strings are not ordered");
        assert!(
            m("nested.a >= 3") && !m("nested.a > 3"),
            "arrays: any element"
        );
    }

    #[test]
    fn cidr_ranges_v4_and_v6() {
        assert!(m("source.ip in 10.0.0.0/8"));
        assert!(m("source.ip in 10.1.2.0/24 and source.ip in 10.1.2.3/32"));
        assert!(!m("source.ip in 10.1.3.0/24"));
        assert!(m("source.ip in 0.0.0.0/0"));
        assert!(m("source.ip in 10.1.2.3"), "a bare address is a /32");
        assert!(m("destination.ip in 2001:db8::/32"));
        assert!(!m("destination.ip in 2001:db9::/32"));
        assert!(m("destination.ip in ::/0"));
        assert!(!m("destination.ip in 0.0.0.0/0"), "families do not mix");
        assert!(m("host.ip in fe80::/10"), "array element");
        assert!(m("mapped in 10.0.0.0/8"), "IPv4-mapped counts as IPv4");
        assert!(!m("message in 10.0.0.0/8"), "not an address");
        assert!(m("source.ip in 11.1.2.3/7"), "host bits ignored");
    }

    #[test]
    fn sets_wildcards_and_contains() {
        assert!(m("agent.id in [probe-9, \"probe-1\"]"));
        assert!(!m("agent.id in [probe-9]"));
        assert!(m("event.severity in [1, 3]"));
        assert!(m("event.category in [intrusion_detection]"));
        assert!(m("agent.id in [probe-*]"));
        assert!(m("host.name = Web-*") && m("host.name = *-01") && m("host.name = W*b*1"));
        assert!(m("host.name = *") && !m("host.name = web-*"));
        assert!(!m("host.name = \"Web-*\""), "quoted star is literal");
        assert!(m("message ~ \"PORT SCAN\"") && m("message ~ scan"));
        assert!(!m("message ~ sweep"));
        assert!(m("source.port ~ 515"));
        assert!(m("event.category = network"), "arrays: any element");
        assert!(m("event.category ~ intrusion"));
    }

    #[test]
    fn exists_dotted_keys_and_nested_arrays() {
        assert!(m("exists source.ip") && !m("exists source.mac"));
        assert!(!m("exists labels.empty"));
        assert!(m("labels.team.name = blue"), "key containing a dot");
        assert!(m("nested.a = 2") && m("nested.a = 1"));
        assert!(m("EXISTS agent and NOT exists nope"));
    }

    #[test]
    fn precedence_not_over_and_over_or() {
        // or is loosest: a or (b and c)
        assert!(m("agent.id = probe-1 or agent.id = x and agent.id = y"));
        // (a or b) and c
        assert!(!m("(agent.id = probe-1 or agent.id = x) and agent.id = y"));
        // not binds tighter than and: (not a) and b
        assert!(!m("not agent.id = probe-1 and event.severity = 3"));
        assert!(m("not (agent.id = probe-1 and event.severity = 4)"));
        assert!(m("not not agent.id = probe-1"));
        assert!(m(
            "!agent.id = x && (event.severity = 1 || event.severity = 3)"
        ));
    }

    #[test]
    fn strings_with_escapes() {
        let v = json!({"m": "say \"hi\"\n\\ *é'"});
        let f = Filter::parse(r#"m = "say \"hi\"\n\\ \*\u00e9'""#).unwrap();
        assert!(f.matches(&v));
        assert!(Filter::parse(r#"m = 'say "hi"\n\\ *é\''"#)
            .unwrap()
            .matches(&v));
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        let e = err("source.ip = ");
        assert_eq!(
            e.to_string(),
            "filter: expected a value after '=' at column 13"
        );
        let e = err("event.kind = alert and");
        assert_eq!(e.column, 23);
        assert!(e.message.contains("expected a field name"), "{e}");
        let e = err("(a = 1 or b = 2");
        assert_eq!(e.column, 16);
        assert!(e.message.contains("close the '(' at column 1"), "{e}");
        let e = err("a = 1 b = 2");
        assert_eq!(e.column, 7);
        assert!(e.message.contains("expected 'and', 'or'"), "{e}");
        let e = err("a.severity >= high");
        assert_eq!(e.column, 15);
        assert!(e.message.contains("number or an RFC 3339 time"), "{e}");
        let e = err("ip in 10.0.0.0/33");
        assert_eq!(e.column, 7);
        assert!(e.message.contains("CIDR"), "{e}");
        let e = err("a in [1, 2");
        assert_eq!(e.column, 11);
        assert!(e.message.contains("',' or ']'"), "{e}");
        let e = err("a = \"open");
        assert_eq!(
            (e.column, e.message.as_str()),
            (5, "unterminated string (no closing \")")
        );
        let e = err("a = \"bad \\q\"");
        assert_eq!(e.column, 10);
        assert!(e.message.contains("unknown escape"), "{e}");
        let e = err("a ? 1");
        assert_eq!(e.column, 3);
        assert!(e.message.contains("operator"), "{e}");
        let e = err("a..b = 1");
        assert_eq!(e.column, 1);
        let e = err("a & b");
        assert_eq!(e.column, 3);
        assert_eq!(err("").column, 1);
        assert_eq!(err("exists").column, 7);
        assert_eq!(err("a = 1 )").column, 7);
        // Columns count characters, not bytes.
        assert_eq!(err("m = \"é\" and").column, 12);
    }

    #[test]
    fn hostile_input_is_bounded() {
        let deep = format!("{}a = 1{}", "(".repeat(10_000), ")".repeat(10_000));
        assert!(err(&deep.chars().take(8000).collect::<String>())
            .message
            .contains("nesting"));
        let nots = format!("{}a = 1", "not ".repeat(2_000));
        assert!(err(&nots).message.contains("nesting"));
        assert!(err(&"a".repeat(MAX_FILTER_BYTES + 1))
            .message
            .contains("longer"));
        // Within the depth limit parentheses work.
        assert!(m(&format!(
            "{}agent.id = probe-1{}",
            "(".repeat(60),
            ")".repeat(60)
        )));
        for s in [
            "\\",
            "\"\\u12",
            "'\\u{zz}'",
            "[",
            "a in",
            "a in [",
            "a in [1,",
            "((",
            "not",
            "a ~",
            "\u{0}",
        ] {
            assert!(Filter::parse(s).is_err(), "{s:?}");
        }
    }

    #[test]
    fn glob_matching() {
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "aXbYbZc"));
        assert!(!glob("a*b*c", "aXbYbZ"));
        assert!(glob("**a", "a"));
        assert!(!glob("a", "ab"));
        assert!(glob("é*", "étoile"));
    }

    #[test]
    fn pushdown_takes_only_top_level_conjuncts() {
        let p = Filter::parse(
            "event.dataset = palisade.alert and (agent.id = x or agent.id = y) and event.severity > 2",
        )
        .unwrap()
        .pushdown();
        assert_eq!(p.kind, Some(EventKind::Alert));
        assert_eq!(p.agent, None);
        assert_eq!(p.min_severity, Some(Severity::Medium), "> 2 is >= 3");
        let p = Filter::parse("agent.id = probe-1 or event.severity >= 4")
            .unwrap()
            .pushdown();
        assert_eq!(p, Pushdown::default());
        let p = Filter::parse("agent.id = probe-* and event.dataset = alert")
            .unwrap()
            .pushdown();
        assert_eq!(p, Pushdown::default());
        let p = Filter::parse("agent.id = probe-1 and event.severity >= 9")
            .unwrap()
            .pushdown();
        assert_eq!(p.agent.as_deref(), Some("probe-1"));
        assert_eq!(p.min_severity, None);
    }

    #[test]
    fn unparseable_stored_json_never_matches() {
        let f = Filter::parse("not exists a").unwrap();
        assert!(f.matches_json(b"{}"));
        assert!(!f.matches_json(b"{"));
    }
}
