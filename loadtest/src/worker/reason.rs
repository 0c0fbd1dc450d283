//! Why a client connection ended, as a label the reports count by.

use std::io;

use c10m_engine::proto::{Error as ProtoError, HandshakeError, TimeoutKind};

/// Why a connection ended.
#[derive(Debug)]
pub enum Reason {
    /// `socket()`, `bind()` or `connect()` failed, or the TCP connect was refused or reset.
    Connect(io::Error),
    /// TCP connect did not complete within the connect timeout.
    ConnectTimeout,
    /// The server's answer to the upgrade request was refused by the client handshake.
    Handshake(HandshakeError),
    /// No `101` within the connect timeout.
    HandshakeTimeout,
    /// The socket ended before the handshake completed.
    HandshakeEof,
    /// The server sent a close frame (with this code, if any).
    ServerClose(Option<u16>),
    /// The TCP connection ended without a close frame.
    Eof,
    /// A socket error after the connection was open.
    Io(io::Error),
    /// The server broke the protocol, or a timer of the protocol core fired.
    Protocol(ProtoError),
    /// The load generator closed it and the server answered.
    ClosedByUs,
    /// The load generator closed it and the server never answered.
    CloseNoReply,
    /// Still connecting when the ramp (or the run) ended.
    Cancelled,
    /// The server refused the subscribe command (`err ...` on /pubsub; an error code on v1).
    SubscribeRefused(Option<u16>),
    /// The subscribe command was not confirmed within the connect timeout (or by the end of
    /// the ramp).
    SubscribeTimeout,
}

impl Reason {
    /// The report label.
    pub fn label(&self) -> String {
        match self {
            Reason::Connect(e) => format!("connect: {}", io_label(e)),
            Reason::ConnectTimeout => "connect: timed out".into(),
            Reason::Handshake(HandshakeError::Status(code)) => format!("handshake: HTTP {code}"),
            Reason::Handshake(HandshakeError::BadResponse(why)) => format!("handshake: {why}"),
            Reason::Handshake(HandshakeError::Malformed) => "handshake: malformed response".into(),
            Reason::Handshake(e) => format!("handshake: {e:?}"),
            Reason::HandshakeTimeout => "handshake: timed out".into(),
            Reason::HandshakeEof => "handshake: connection closed".into(),
            Reason::ServerClose(Some(code)) => format!("closed by server: {code}"),
            Reason::ServerClose(None) => "closed by server: no code".into(),
            Reason::Eof => "closed by server: TCP EOF without close frame".into(),
            Reason::Io(e) => format!("socket error: {}", io_label(e)),
            Reason::Protocol(ProtoError::Timeout(TimeoutKind::Idle)) => {
                "idle timeout: nothing received from server".into()
            }
            Reason::Protocol(e) => format!("protocol error: {e}"),
            Reason::ClosedByUs => "closed by load generator".into(),
            Reason::CloseNoReply => "closed by load generator: no close reply".into(),
            Reason::Cancelled => "cancelled: still connecting at the end of the ramp".into(),
            Reason::SubscribeRefused(Some(code)) => format!("subscribe: refused (error {code})"),
            Reason::SubscribeRefused(None) => "subscribe: refused".into(),
            Reason::SubscribeTimeout => "subscribe: not confirmed in time".into(),
        }
    }

    /// Whether this is how every connection should end: closed by us at the end of the run.
    pub fn is_ours(&self) -> bool {
        matches!(self, Reason::ClosedByUs | Reason::CloseNoReply)
    }
}

/// An I/O error as a short, stable label: the OS message, or the text of the error it carries
/// (a TLS failure: rustls' reason, such as an untrusted certificate), or the kind's description.
fn io_label(e: &io::Error) -> String {
    if let Some(inner) = e.get_ref() {
        return format!("{}: {inner}", e.kind());
    }
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code)
            .to_string()
            .split(" (os error")
            .next()
            .unwrap_or_default()
            .to_lowercase(),
        None => e.kind().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_short() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(
            Reason::Connect(refused).label(),
            "connect: connection refused"
        );
        assert_eq!(
            Reason::Handshake(HandshakeError::Status(404)).label(),
            "handshake: HTTP 404"
        );
        assert_eq!(
            Reason::Handshake(HandshakeError::BadResponse("wrong Sec-WebSocket-Accept")).label(),
            "handshake: wrong Sec-WebSocket-Accept"
        );
        assert_eq!(
            Reason::ServerClose(Some(1001)).label(),
            "closed by server: 1001"
        );
        assert_eq!(
            Reason::Protocol(ProtoError::Timeout(TimeoutKind::Idle)).label(),
            "idle timeout: nothing received from server"
        );
        assert_eq!(
            Reason::SubscribeRefused(Some(100)).label(),
            "subscribe: refused (error 100)"
        );
        assert!(Reason::ClosedByUs.is_ours() && Reason::CloseNoReply.is_ours());
        assert!(!Reason::Eof.is_ours());
        let tls = io::Error::new(
            io::ErrorKind::InvalidData,
            "invalid peer certificate: UnknownIssuer",
        );
        assert_eq!(
            Reason::Connect(tls).label(),
            "connect: invalid data: invalid peer certificate: UnknownIssuer"
        );
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(
            Reason::Connect(emfile).label(),
            "connect: too many open files"
        );
    }
}
