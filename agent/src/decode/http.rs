//! HTTP/1.x message heads at the start of a TCP payload: the request line with its `Host` and
//! `User-Agent` headers, or the status line of a response.
//!
//! Only the segment at hand is read: a head split across segments yields what this one holds,
//! and a start line not finished within it yields nothing (it is not malformed, only unseen).

use super::Malformed;

/// Methods recognised at the start of a payload. Matching the method and the space after it
/// first keeps the common non-HTTP segment to a couple of byte compares.
const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const RESPONSE_PREFIX: &[u8] = b"HTTP/1.";
/// A start line longer than this, still unfinished, is not worth waiting for.
const MAX_START_LINE: usize = 8192;
/// Header lines looked at for `Host` and `User-Agent`.
const MAX_HEADERS: usize = 64;

/// An HTTP/1.x message head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Http<'a> {
    /// A request.
    Request(HttpRequest<'a>),
    /// A response.
    Response(HttpResponse<'a>),
}

/// An HTTP/1.x request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpRequest<'a> {
    /// The method (`GET`, `POST`, …).
    pub method: &'a str,
    /// The request target as sent (`/index.html`, `http://host/`, `host:443`, …).
    pub target: &'a str,
    /// The version (`HTTP/1.1`).
    pub version: &'a str,
    /// The `Host` header, trimmed, if it is in this segment.
    pub host: Option<&'a str>,
    /// The `User-Agent` header, trimmed, if it is in this segment.
    pub user_agent: Option<&'a str>,
}

/// An HTTP/1.x response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpResponse<'a> {
    /// The version (`HTTP/1.1`).
    pub version: &'a str,
    /// The status code.
    pub status: u16,
    /// The reason phrase, possibly empty.
    pub reason: &'a str,
}

/// Reads an HTTP/1.x head from the start of `payload`. `Ok(None)` when the payload does not
/// start like HTTP or its start line does not end in this segment.
pub(crate) fn sniff(payload: &[u8]) -> Result<Option<Http<'_>>, Malformed> {
    let Some(&first) = payload.first() else {
        return Ok(None);
    };
    let is_request = matches!(first, b'G' | b'P' | b'H' | b'D' | b'O' | b'C' | b'T')
        && METHODS.iter().any(|m| payload.starts_with(m));
    if !is_request && !payload.starts_with(RESPONSE_PREFIX) {
        return Ok(None);
    }
    let mut lines = Lines { rest: payload };
    let Some(start) = lines.next() else {
        return if payload.len() > MAX_START_LINE {
            Err(Malformed::BadHttp)
        } else {
            Ok(None)
        };
    };
    let http = if is_request {
        Http::Request(request(start, lines)?)
    } else {
        Http::Response(response(start)?)
    };
    Ok(Some(http))
}

fn request<'a>(line: &'a [u8], headers: Lines<'a>) -> Result<HttpRequest<'a>, Malformed> {
    let line = std::str::from_utf8(line).map_err(|_| Malformed::BadHttp)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Malformed::BadHttp);
    };
    if target.is_empty() || !is_http1_version(version) {
        return Err(Malformed::BadHttp);
    }
    let mut request = HttpRequest {
        method,
        target,
        version,
        host: None,
        user_agent: None,
    };
    for line in headers.take(MAX_HEADERS) {
        if line.is_empty() {
            break;
        }
        // Lines without a colon (obsolete folding, junk) carry nothing we look for.
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = line.split_at(colon);
        let slot = if name.eq_ignore_ascii_case(b"host") {
            &mut request.host
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            &mut request.user_agent
        } else {
            continue;
        };
        if slot.is_none() {
            let value = value.get(1..).unwrap_or_default().trim_ascii();
            *slot = Some(std::str::from_utf8(value).map_err(|_| Malformed::BadHttp)?);
        }
    }
    Ok(request)
}

fn response(line: &[u8]) -> Result<HttpResponse<'_>, Malformed> {
    let line = std::str::from_utf8(line).map_err(|_| Malformed::BadHttp)?;
    let mut parts = line.splitn(3, ' ');
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        return Err(Malformed::BadHttp);
    };
    if !is_http1_version(version) || code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed::BadHttp);
    }
    let status = code.parse().map_err(|_| Malformed::BadHttp)?;
    Ok(HttpResponse {
        version,
        status,
        reason: parts.next().unwrap_or_default(),
    })
}

fn is_http1_version(version: &str) -> bool {
    matches!(version.as_bytes(), [b'H', b'T', b'T', b'P', b'/', b'1', b'.', minor] if minor.is_ascii_digit())
}

/// Lines ended by CRLF (or a bare LF, which servers accept); a final line without its end is
/// not yielded, since the rest of it is in a later segment.
#[derive(Debug)]
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == b'\n')?;
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest.get(1..).unwrap_or_default();
        Some(line.strip_suffix(b"\r").unwrap_or(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sniffed(payload: &[u8]) -> Http<'_> {
        sniff(payload).unwrap().unwrap()
    }

    #[test]
    fn request_line_host_and_user_agent_are_read() {
        let payload = b"GET /index.html?q=1 HTTP/1.1\r\nhost:  example.com \r\nAccept: */*\r\n\
                        User-Agent: curl/8.5.0\r\nUser-Agent: second\r\n\r\nbody";
        let Http::Request(req) = sniffed(payload) else {
            panic!("not a request")
        };
        assert_eq!(
            req,
            HttpRequest {
                method: "GET",
                target: "/index.html?q=1",
                version: "HTTP/1.1",
                host: Some("example.com"),
                user_agent: Some("curl/8.5.0"),
            }
        );
    }

    #[test]
    fn headers_in_a_later_segment_are_simply_absent() {
        let Http::Request(req) = sniffed(b"POST /api HTTP/1.0\r\nHost: a\r\nUser-Ag") else {
            panic!("not a request")
        };
        assert_eq!(
            (req.method, req.host, req.user_agent),
            ("POST", Some("a"), None)
        );
        assert_eq!(sniff(b"GET /very/long/path-cut-he").unwrap(), None);
    }

    #[test]
    fn response_status_is_read() {
        let Http::Response(resp) = sniffed(b"HTTP/1.1 404 Not Found\r\nServer: x\r\n\r\n") else {
            panic!("not a response")
        };
        assert_eq!(
            (resp.version, resp.status, resp.reason),
            ("HTTP/1.1", 404, "Not Found")
        );
        let Http::Response(resp) = sniffed(b"HTTP/1.0 200\n") else {
            panic!("not a response")
        };
        assert_eq!((resp.status, resp.reason), (200, ""));
    }

    #[test]
    fn other_payloads_are_not_http() {
        for payload in [
            &b""[..],
            b"\x16\x03\x01",
            b"GETX / HTTP/1.1\r\n",
            b"SSH-2.0-OpenSSH\r\n",
        ] {
            assert_eq!(sniff(payload).unwrap(), None);
        }
    }

    #[test]
    fn broken_start_lines_are_malformed() {
        for payload in [
            &b"GET /\r\n"[..],
            b"GET / HTTP/2\r\n",
            b"GET  HTTP/1.1\r\n",
            b"GET / HTTP/1.1 extra\r\n",
            b"GET /\xff HTTP/1.1\r\n",
            b"HTTP/1.1 2000 OK\r\n",
            b"HTTP/1.1 +20 OK\r\n",
        ] {
            assert_eq!(sniff(payload), Err(Malformed::BadHttp), "{payload:?}");
        }
        let long = [&b"GET /"[..], &[b'a'; MAX_START_LINE]].concat();
        assert_eq!(sniff(&long), Err(Malformed::BadHttp));
        assert_eq!(
            sniff(b"GET / HTTP/1.1\r\nHost: \xff\r\n\r\n"),
            Err(Malformed::BadHttp)
        );
    }
}
