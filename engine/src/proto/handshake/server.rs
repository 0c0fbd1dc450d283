//! Server side of the opening handshake: parse and check the upgrade request, answer 101 or an
//! HTTP error.

use super::super::error::HandshakeError;
use super::{accept_key, has_token, reason_phrase, tokens};

/// Bounds on the request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head (request line and headers) in bytes; beyond it the answer is 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 8 * 1024,
        }
    }
}

/// Most header lines a request may carry (431 beyond).
const MAX_HEADERS: usize = 64;

/// One request header, borrowed from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// Name as sent.
    pub name: &'a str,
    /// Raw value bytes.
    pub value: &'a [u8],
}

/// A valid WebSocket upgrade request, borrowed from the bytes it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    target: &'a str,
    headers: Vec<Header<'a>>,
    key: &'a [u8],
}

impl<'a> Request<'a> {
    /// The request target's path (before any `?`).
    pub fn path(&self) -> &'a str {
        self.target.split_once('?').map_or(self.target, |(p, _)| p)
    }

    /// The query string after `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }

    /// The first header with this name (ASCII-case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    }

    /// All headers in order.
    pub fn headers(&self) -> &[Header<'a>] {
        &self.headers
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&'a str> {
        self.header("host")
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// The `Origin` header (browsers always send it).
    pub fn origin(&self) -> Option<&'a str> {
        self.header("origin")
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Subprotocols the client offers, in its order of preference.
    pub fn protocols(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-protocol"))
            .flat_map(|h| tokens(h.value))
    }

    /// Extension offers, raw (`permessage-deflate; client_max_window_bits`).
    pub fn extensions(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
            .flat_map(|h| tokens(h.value))
    }

    /// The client's `Sec-WebSocket-Key`.
    pub fn key(&self) -> &'a [u8] {
        self.key
    }
}

/// The path (before any `?`) of a complete, plain `GET` or `HEAD` request head at the start of
/// `buf` (one that is not a WebSocket upgrade), and whether it was `HEAD`; `None` for anything
/// else. Lets a server answer a few plain pages on its WebSocket port.
pub fn plain_request(buf: &[u8]) -> Option<(&str, bool)> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return None,
    }
    let head = match req.method? {
        "GET" => false,
        "HEAD" => true,
        _ => return None,
    };
    let target = req.path?;
    Some((target.split_once('?').map_or(target, |(p, _)| p), head))
}

/// Parses an upgrade request from the bytes received so far.
///
/// `Ok(None)`: the head is incomplete and within the size cap; read more. `Ok(Some((req, n)))`:
/// a valid upgrade request whose head took `n` bytes (anything after belongs to the WebSocket
/// stream). `Err`: answer with [`write_reject`] and close.
pub fn parse_request(
    buf: &[u8],
    limits: Limits,
) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
    let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut raw);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > limits.max_header_bytes {
                return Err(HandshakeError::HeadersTooLarge {
                    max: limits.max_header_bytes,
                });
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HandshakeError::HeadersTooLarge {
                max: limits.max_header_bytes,
            });
        }
        Err(_) => return Err(HandshakeError::Malformed),
    };
    if head_len > limits.max_header_bytes {
        return Err(HandshakeError::HeadersTooLarge {
            max: limits.max_header_bytes,
        });
    }
    //= https://www.rfc-editor.org/rfc/rfc6455#section-4.2.1
    //# 1.   An HTTP/1.1 or higher GET request, including a "Request-URI"
    if req.method != Some("GET") {
        return Err(HandshakeError::Method);
    }
    if req.version != Some(1) {
        return Err(HandshakeError::HttpVersion);
    }
    let target = req.path.ok_or(HandshakeError::Malformed)?;
    let headers: Vec<Header<'_>> = req
        .headers
        .iter()
        .map(|h| Header {
            name: h.name,
            value: h.value,
        })
        .collect();
    let find = |name: &str| {
        headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    //# 2.   A |Host| header field containing the server's authority.
    if find("host").is_none_or(|h| h.trim_ascii().is_empty()) {
        return Err(HandshakeError::MissingHost);
    }
    //# 3.   An |Upgrade| header field containing the value "websocket",
    //#      treated as an ASCII case-insensitive value.
    //# 4.   A |Connection| header field that includes the token "Upgrade",
    //#      treated as an ASCII case-insensitive value.
    let upgrade = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("upgrade"))
        .any(|h| has_token(h.value, "websocket"));
    let connection = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("connection"))
        .any(|h| has_token(h.value, "upgrade"));
    if !upgrade || !connection {
        return Err(HandshakeError::NotUpgrade);
    }
    //# 6.   A |Sec-WebSocket-Version| header field, with a value of 13.
    if find("sec-websocket-version").map(<[u8]>::trim_ascii) != Some(b"13") {
        return Err(HandshakeError::UnsupportedVersion);
    }
    //# 5.   A |Sec-WebSocket-Key| header field with a base64-encoded (see
    //#      Section 4 of [RFC4648]) value that, when decoded, is 16 bytes in
    //#      length.
    let key = find("sec-websocket-key")
        .map(<[u8]>::trim_ascii)
        .ok_or(HandshakeError::InvalidKey)?;
    if !is_valid_key(key) {
        return Err(HandshakeError::InvalidKey);
    }
    Ok(Some((
        Request {
            target,
            headers,
            key,
        },
        head_len,
    )))
}

/// A 16-byte nonce in padded base64 is exactly 24 characters ending in "==".
fn is_valid_key(key: &[u8]) -> bool {
    use base64::Engine as _;
    let mut decoded = [0u8; 18];
    key.len() == 24
        && matches!(
            base64::engine::general_purpose::STANDARD.decode_slice(key, &mut decoded),
            Ok(16)
        )
}

/// What the application agreed to when accepting a request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Accept<'a> {
    /// The chosen subprotocol; must be one the client offered.
    pub protocol: Option<&'a str>,
    /// The accepted extensions' response value. The frame layer implements none, so leave this
    /// `None` unless the application handles the RSV bits an extension defines.
    pub extensions: Option<&'a str>,
    /// Extra response headers (cookies, server name).
    pub headers: &'a [(&'a str, &'a str)],
}

/// Appends the `101 Switching Protocols` answer for `request` to `out`.
pub fn write_accept(request: &Request<'_>, accept: &Accept<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ",
    );
    out.extend_from_slice(&accept_key(request.key));
    out.extend_from_slice(b"\r\n");
    let mut header = |name: &str, value: &str| {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    };
    if let Some(p) = accept.protocol {
        header("Sec-WebSocket-Protocol", p);
    }
    if let Some(e) = accept.extensions {
        header("Sec-WebSocket-Extensions", e);
    }
    for (name, value) in accept.headers {
        header(name, value);
    }
    out.extend_from_slice(b"\r\n");
}

/// Appends an HTTP error answer for a refused handshake to `out`; the caller closes after
/// flushing it. 426 carries `Sec-WebSocket-Version: 13` (section 4.4), 405 carries `Allow`.
pub fn write_reject(error: &HandshakeError, out: &mut Vec<u8>) {
    let status = error.status();
    let body = match error {
        HandshakeError::NotUpgrade => "this endpoint speaks WebSocket only\n",
        HandshakeError::UnsupportedVersion => "unsupported Sec-WebSocket-Version; use 13\n",
        HandshakeError::InvalidKey => "missing or invalid Sec-WebSocket-Key\n",
        HandshakeError::MissingHost => "missing Host header\n",
        HandshakeError::HeadersTooLarge { .. } => "request header too large\n",
        HandshakeError::OriginRejected => "origin not allowed\n",
        HandshakeError::Method => "only GET can open a WebSocket\n",
        _ => "bad request\n",
    };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n",
        reason_phrase(status),
        body.len()
    );
    out.extend_from_slice(head.as_bytes());
    match status {
        426 => out.extend_from_slice(b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"),
        405 => out.extend_from_slice(b"Allow: GET\r\n"),
        _ => {}
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "GET /chat?room=1 HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
        Origin: http://example.com\r\nSec-WebSocket-Protocol: chat, superchat\r\n\
        Sec-WebSocket-Version: 13\r\n\r\n";

    fn parse(s: &str) -> Result<Option<(Request<'_>, usize)>, HandshakeError> {
        parse_request(s.as_bytes(), Limits::default())
    }

    #[test]
    fn rfc_example_request_is_accepted() {
        let Ok(Some((req, n))) = parse(GOOD) else {
            panic!("RFC example rejected")
        };
        assert_eq!(n, GOOD.len());
        assert_eq!(req.path(), "/chat");
        assert_eq!(req.query(), Some("room=1"));
        assert_eq!(req.origin(), Some("http://example.com"));
        assert_eq!(req.protocols().collect::<Vec<_>>(), ["chat", "superchat"]);
        let mut out = Vec::new();
        write_accept(
            &req,
            &Accept {
                protocol: Some("chat"),
                ..Accept::default()
            },
            &mut out,
        );
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HTTP/1.1 101 Switching Protocols\r\n"));
        assert!(text.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        assert!(text.contains("Sec-WebSocket-Protocol: chat\r\n"));
        assert!(text.ends_with("\r\n\r\n"));
    }

    #[test]
    fn every_prefix_is_incomplete() {
        for cut in 0..GOOD.len() {
            assert_eq!(parse(&GOOD[..cut]), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn bad_requests_get_their_status() {
        let cases: [(&str, &str, u16); 8] = [
            ("GET /chat?room=1 HTTP/1.1", "POST /chat HTTP/1.1", 405),
            ("GET /chat?room=1 HTTP/1.1", "GET /chat HTTP/1.0", 400),
            ("Host: server.example.com\r\n", "", 400),
            ("Upgrade: websocket\r\n", "", 426),
            ("Connection: Upgrade\r\n", "Connection: keep-alive\r\n", 426),
            ("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8", 426),
            (
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Key: short",
                400,
            ),
            ("GET /chat", "G\0T /chat", 400),
        ];
        for (from, to, status) in cases {
            assert!(GOOD.contains(from), "{from}");
            let req = GOOD.replacen(from, to, 1);
            let err = parse(&req).expect_err(&req);
            assert_eq!(err.status(), status, "{req}");
        }
    }

    #[test]
    fn oversized_heads_get_431() {
        let big = format!("GET / HTTP/1.1\r\nX-Pad: {}\r\n", "a".repeat(9000));
        assert_eq!(
            parse(&big),
            Err(HandshakeError::HeadersTooLarge { max: 8192 })
        );
        let many: String = (0..100).map(|i| format!("X-{i}: v\r\n")).collect();
        let req = GOOD.replacen("\r\n\r\n", &format!("\r\n{many}\r\n"), 1);
        assert_eq!(parse(&req).unwrap_err().status(), 431);
    }

    #[test]
    fn reject_426_names_the_version() {
        let mut out = Vec::new();
        write_reject(&HandshakeError::UnsupportedVersion, &mut out);
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(text.contains("Sec-WebSocket-Version: 13\r\n"));
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            panic!("no blank line: {text}")
        };
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
    }
}
