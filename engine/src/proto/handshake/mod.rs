//! The opening handshake (RFC 6455 section 4): HTTP/1.1 upgrade parsing and answers.
//!
//! Like the frame layer, this does no I/O: parsers take the bytes received so far and return
//! `Ok(None)` until the head is complete; responses are appended to a caller's buffer.

mod client;
mod server;

pub use client::{ClientHandshake, ClientRequest, Response};
pub use server::{
    Accept, Header, Limits, Request, parse_request, plain_request, write_accept, write_reject,
};

use base64::Engine as _;
use sha1::{Digest, Sha1};

/// The GUID every accept key is derived with (section 1.3).
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key`: base64(SHA-1(key + GUID)), 28 bytes.
pub fn accept_key(key: &[u8]) -> [u8; 28] {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    let digest = sha.finalize();
    let mut out = [0u8; 28];
    // 20 bytes of digest always encode to exactly 28 bytes of padded base64.
    let written = base64::engine::general_purpose::STANDARD.encode_slice(digest, &mut out);
    debug_assert_eq!(written, Ok(28));
    out
}

/// Whether a comma-separated header value holds `token`, compared ASCII-case-insensitively.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|part| part.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The comma-separated items of a header value, trimmed, empty ones skipped.
fn tokens(value: &[u8]) -> impl Iterator<Item = &str> {
    value
        .split(|&b| b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty())
        .filter_map(|t| std::str::from_utf8(t).ok())
}

/// The reason phrase of the statuses the handshake uses.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_accept_key_example() {
        // Section 1.3.
        assert_eq!(
            &accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn tokens_are_case_insensitive_and_trimmed() {
        assert!(has_token(b"keep-alive, Upgrade", "upgrade"));
        assert!(!has_token(b"keep-alive, Upgraded", "upgrade"));
        assert_eq!(
            tokens(b" chat ,, superchat").collect::<Vec<_>>(),
            ["chat", "superchat"]
        );
    }
}
