//! The opening handshake as an application sees it: who asks ([`UpgradeRequest`]), and the
//! answer ([`Upgrade`]): accept with a subprotocol and extra response headers, refuse with an
//! HTTP status, or defer and answer later (after an asynchronous token check, say) through
//! [`Ctx::accept_upgrade`](super::Ctx::accept_upgrade) or the server [`Handle`](super::Handle).
//! A deferred upgrade is still bound by the handshake timeout.

use std::net::SocketAddr;

use super::id::ConnId;
use crate::proto::handshake::Request;

/// An upgrade request, with the connection it arrived on.
#[derive(Debug)]
pub struct UpgradeRequest<'a> {
    pub(crate) id: ConnId,
    pub(crate) peer: Option<SocketAddr>,
    pub(crate) request: &'a Request<'a>,
}

impl<'a> UpgradeRequest<'a> {
    /// The connection's id: the one `on_open` and every later callback will see.
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// The peer's address (`None` if the socket could not say, e.g. it is already reset).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The HTTP request: path, query, headers, `Origin`, offered subprotocols.
    pub fn request(&self) -> &Request<'a> {
        self.request
    }
}

/// How the server answers an upgrade request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upgrade {
    /// Open the WebSocket.
    Accept(Accept),
    /// Refuse with this HTTP status (401, 403, 404, 429...).
    Reject(u16),
    /// Answer later with [`Ctx::accept_upgrade`](super::Ctx::accept_upgrade) /
    /// [`Handle::accept_upgrade`](super::Handle::accept_upgrade) or the `reject_` twins. Input
    /// that arrives meanwhile is kept (up to the request head limit plus
    /// [`DEFERRED_INPUT_MAX`]); the handshake timeout still applies.
    Defer,
}

impl Upgrade {
    /// Accept with no subprotocol and no extra headers.
    pub fn accept() -> Self {
        Upgrade::Accept(Accept::default())
    }
}

/// Bytes a client may send after its request head while the upgrade is deferred (it should
/// send nothing before the 101).
pub const DEFERRED_INPUT_MAX: usize = 16 << 10;

/// What an accepted upgrade's 101 answer carries besides the handshake itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Accept {
    /// The chosen subprotocol; it should be one the client offered.
    pub protocol: Option<String>,
    /// Extra response headers (`Set-Cookie`, a server name). A name or value holding CR, LF or
    /// NUL, or a name that is not an HTTP token, refuses the upgrade with 500 instead.
    pub headers: Vec<(String, String)>,
}

impl Accept {
    /// Chooses a subprotocol.
    pub fn protocol(mut self, protocol: impl Into<String>) -> Self {
        self.protocol = Some(protocol.into());
        self
    }

    /// Adds a response header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Whether every header (and the subprotocol) can go on the wire as it is, with no way to
    /// inject a line.
    pub(crate) fn well_formed(&self) -> bool {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        let value = |s: &str| !s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0));
        self.protocol.as_deref().is_none_or(token)
            && self.headers.iter().all(|(n, v)| token(n) && value(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_injection_is_refused() {
        assert!(Accept::default().well_formed());
        assert!(
            Accept::default()
                .protocol("chat.v1")
                .header("Set-Cookie", "a=b; Path=/")
                .well_formed()
        );
        assert!(!Accept::default().header("X", "a\r\nEvil: 1").well_formed());
        assert!(!Accept::default().header("Bad Name", "v").well_formed());
        assert!(!Accept::default().header("", "v").well_formed());
        assert!(!Accept::default().protocol("a b").well_formed());
        assert!(!Accept::default().header("X", "nul\0").well_formed());
    }
}
