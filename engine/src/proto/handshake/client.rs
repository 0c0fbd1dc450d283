//! Client side of the opening handshake, for the load generator and tests: write the upgrade
//! request, then check the server's answer.

use base64::Engine as _;

use super::super::deflate::{self, Deflate};
use super::super::error::HandshakeError;
use super::{accept_key, has_token};

/// What the client asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientRequest<'a> {
    /// `Host` header value (`host:port`).
    pub host: &'a str,
    /// Request target, for example `/echo` or `/pubsub?topic=a`.
    pub path: &'a str,
    /// `Origin`, if any.
    pub origin: Option<&'a str>,
    /// Subprotocols to offer, most preferred first.
    pub protocols: &'a [&'a str],
    /// Extra headers.
    pub headers: &'a [(&'a str, &'a str)],
    /// Offer permessage-deflate ([`deflate::client_offer`]: no context on either side).
    pub deflate: bool,
}

/// A client handshake in progress: remembers what the server must answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientHandshake {
    expected_accept: [u8; 28],
    protocols: Vec<String>,
    offered_deflate: bool,
}

/// The server's accepted answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response<'a> {
    /// The subprotocol the server chose, one of those offered.
    pub protocol: Option<&'a str>,
    /// permessage-deflate, if offered and accepted: pass it to
    /// [`Connection::set_deflate`](crate::proto::Connection::set_deflate).
    pub deflate: Option<Deflate>,
}

/// Most header lines accepted in a response.
const MAX_HEADERS: usize = 64;

impl ClientHandshake {
    /// Appends the upgrade request to `out`. `nonce` must be 16 random bytes (section 4.1).
    pub fn start(request: &ClientRequest<'_>, nonce: [u8; 16], out: &mut Vec<u8>) -> Self {
        let key = base64::engine::general_purpose::STANDARD.encode(nonce);
        let mut text = format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            request.path, request.host
        );
        if let Some(origin) = request.origin {
            text.push_str(&format!("Origin: {origin}\r\n"));
        }
        if !request.protocols.is_empty() {
            text.push_str(&format!(
                "Sec-WebSocket-Protocol: {}\r\n",
                request.protocols.join(", ")
            ));
        }
        for (name, value) in request.headers {
            text.push_str(&format!("{name}: {value}\r\n"));
        }
        if request.deflate {
            text.push_str(&format!(
                "Sec-WebSocket-Extensions: {}\r\n",
                deflate::client_offer()
            ));
        }
        text.push_str("\r\n");
        out.extend_from_slice(text.as_bytes());
        ClientHandshake {
            expected_accept: accept_key(key.as_bytes()),
            protocols: request.protocols.iter().map(|p| (*p).to_owned()).collect(),
            offered_deflate: request.deflate,
        }
    }

    /// Checks the server's answer. `Ok(None)` until the head is complete; on success, returns how
    /// many bytes the head took (frames may follow in the same buffer).
    pub fn parse_response<'a>(
        &self,
        buf: &'a [u8],
    ) -> Result<Option<(Response<'a>, usize)>, HandshakeError> {
        let mut raw = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut resp = httparse::Response::new(&mut raw);
        let n = match resp.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(HandshakeError::Malformed),
        };
        match resp.code {
            Some(101) => {}
            Some(code) => return Err(HandshakeError::Status(code)),
            None => return Err(HandshakeError::Malformed),
        }
        let find = |name: &str| {
            resp.headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case(name))
                .map(|h| h.value)
        };
        //= https://www.rfc-editor.org/rfc/rfc6455#section-4.1
        //# If the response lacks an |Upgrade| header field or the |Upgrade|
        //# header field contains a value that is not an ASCII case-
        //# insensitive match for the value "websocket", the client MUST
        //# _Fail the WebSocket Connection_.
        if !find("upgrade").is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"websocket")) {
            return Err(HandshakeError::BadResponse("missing Upgrade: websocket"));
        }
        if !find("connection").is_some_and(|v| has_token(v, "upgrade")) {
            return Err(HandshakeError::BadResponse("missing Connection: Upgrade"));
        }
        if find("sec-websocket-accept").map(<[u8]>::trim_ascii) != Some(&self.expected_accept[..]) {
            return Err(HandshakeError::BadResponse("wrong Sec-WebSocket-Accept"));
        }
        let deflate = match find("sec-websocket-extensions") {
            None => None,
            Some(_) if !self.offered_deflate => {
                return Err(HandshakeError::BadResponse("extension not offered"));
            }
            Some(v) => deflate::client_accepts(Some(v)).map_err(|_| {
                HandshakeError::BadResponse("permessage-deflate answer not acceptable")
            })?,
        };
        let protocol = match find("sec-websocket-protocol") {
            None => None,
            Some(p) => {
                let p = std::str::from_utf8(p.trim_ascii())
                    .map_err(|_| HandshakeError::BadResponse("subprotocol is not UTF-8"))?;
                if !self.protocols.iter().any(|offered| offered == p) {
                    return Err(HandshakeError::BadResponse("subprotocol not offered"));
                }
                Some(p)
            }
        };
        Ok(Some((Response { protocol, deflate }, n)))
    }
}

#[cfg(test)]
mod tests {
    use super::super::server::{Accept, Limits, parse_request, write_accept};
    use super::*;

    #[test]
    fn client_and_server_agree() {
        let mut wire = Vec::new();
        let request = ClientRequest {
            host: "127.0.0.1:9001",
            path: "/echo?x=1",
            protocols: &["a", "b"],
            ..ClientRequest::default()
        };
        let hs = ClientHandshake::start(&request, [7; 16], &mut wire);
        let Ok(Some((req, n))) = parse_request(&wire, Limits::default()) else {
            panic!("our request was rejected")
        };
        assert_eq!(n, wire.len());
        assert_eq!(req.path(), "/echo");
        let mut answer = Vec::new();
        write_accept(
            &req,
            &Accept {
                protocol: Some("b"),
                ..Accept::default()
            },
            &mut answer,
        );
        answer.extend_from_slice(b"\x81\x00");
        let Ok(Some((resp, used))) = hs.parse_response(&answer) else {
            panic!("our answer was rejected")
        };
        assert_eq!(resp.protocol, Some("b"));
        assert_eq!(&answer[used..], b"\x81\x00");
        for cut in 0..used {
            assert_eq!(hs.parse_response(&answer[..cut]), Ok(None));
        }
    }

    #[test]
    fn deflate_is_offered_and_its_answer_read() {
        for (offer, answer, want) in [
            (true, Some(deflate::client_offer()), Ok(Some(15))),
            (true, None, Ok(None)),
            (false, Some(deflate::client_offer()), Err(())),
            (true, Some("permessage-deflate".to_owned()), Err(())),
        ] {
            let mut wire = Vec::new();
            let request = ClientRequest {
                host: "h",
                path: "/",
                deflate: offer,
                ..ClientRequest::default()
            };
            let hs = ClientHandshake::start(&request, [3; 16], &mut wire);
            let Ok(Some((req, _))) = parse_request(&wire, Limits::default()) else {
                panic!("our request was rejected")
            };
            let offered = req.header("sec-websocket-extensions").map(<[u8]>::to_vec);
            assert_eq!(offered.is_some(), offer);
            let headers: Vec<(&str, &str)> = answer
                .iter()
                .map(|a| ("Sec-WebSocket-Extensions", a.as_str()))
                .collect();
            let mut out = Vec::new();
            write_accept(
                &req,
                &Accept {
                    headers: &headers,
                    ..Accept::default()
                },
                &mut out,
            );
            let got = hs
                .parse_response(&out)
                .map(|r| r.and_then(|(resp, _)| resp.deflate).map(|d| d.window_bits))
                .map_err(|_| ());
            assert_eq!(got, want.map(|w: Option<u8>| w), "{offer} {answer:?}");
        }
    }

    #[test]
    fn wrong_answers_fail() {
        let mut wire = Vec::new();
        let hs = ClientHandshake::start(
            &ClientRequest {
                host: "h",
                path: "/",
                ..ClientRequest::default()
            },
            [1; 16],
            &mut wire,
        );
        let bad_key = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
        assert_eq!(
            hs.parse_response(bad_key),
            Err(HandshakeError::BadResponse("wrong Sec-WebSocket-Accept"))
        );
        assert_eq!(
            hs.parse_response(b"HTTP/1.1 404 Not Found\r\n\r\n"),
            Err(HandshakeError::Status(404))
        );
    }
}
