//! Errors as data: one error type with categories, mapped to close codes and HTTP statuses in
//! exactly one place each ([`Error::close_code`], [`HandshakeError::status`]).

use std::fmt;

use super::close::CloseCode;

/// Everything that can go wrong in the protocol core.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Error {
    /// The peer broke a framing rule of RFC 6455. Fatal; closes with 1002.
    Protocol(ProtocolError),
    /// A text message or close reason is not valid UTF-8. Fatal; closes with 1007.
    InvalidUtf8,
    /// A frame or message exceeds a configured limit. Fatal; closes with 1009.
    Capacity(CapacityError),
    /// The opening handshake failed. Fatal; answered with an HTTP status, no close frame.
    Handshake(HandshakeError),
    /// A timer expired (idle peer, or no reply to our close). Fatal.
    Timeout(TimeoutKind),
    /// The application asked for something the protocol does not allow. Not fatal: nothing was
    /// written and the connection is unchanged.
    Usage(UsageError),
    /// The connection is closed; nothing more can be read or sent.
    Closed,
}

/// Framing violations (close code 1002).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProtocolError {
    /// RSV1-3 set without a negotiated extension that defines them.
    ReservedBits(u8),
    /// Opcode 3-7 or 11-15.
    UnknownOpcode(u8),
    /// A client frame arrived without a mask (section 5.1).
    UnmaskedFrame,
    /// A server frame arrived with a mask (section 5.1).
    MaskedFrame,
    /// A control frame with FIN clear (section 5.5).
    FragmentedControl,
    /// A control frame with more than 125 bytes of payload (section 5.5).
    ControlTooLong(u64),
    /// A continuation frame with no fragmented message in progress.
    UnexpectedContinuation,
    /// A new text or binary frame while a fragmented message is unfinished.
    ExpectedContinuation,
    /// A 64-bit payload length with its most significant bit set (section 5.2).
    LengthOverflow,
    /// A close frame with a one-byte body.
    CloseBodyTooShort,
    /// A close code that may not be sent on the wire.
    InvalidCloseCode(u16),
    /// A permessage-deflate message that is not a valid DEFLATE stream.
    InvalidCompressedData,
}

/// Size limits (close code 1009).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CapacityError {
    /// One frame's payload is larger than `max`.
    FrameTooLong {
        /// Declared payload length.
        size: u64,
        /// The configured limit.
        max: usize,
    },
    /// A (possibly fragmented) message grew larger than `max`.
    MessageTooLong {
        /// Size the message would reach.
        size: u64,
        /// The configured limit.
        max: usize,
    },
}

/// Which timer expired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeoutKind {
    /// Nothing arrived from the peer within the idle timeout, pings included.
    Idle,
    /// The peer did not answer our close frame within the close timeout.
    CloseHandshake,
}

/// Misuse by the application; the connection is left as it was.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageError {
    /// Control frames carry at most 125 bytes.
    ControlTooLong,
    /// A data frame was started while an outgoing fragmented message is unfinished, or a
    /// continuation was sent with none in progress.
    FragmentOrder,
    /// Data frames cannot be sent after a close frame.
    CloseSent,
    /// The close code may not be sent on the wire.
    InvalidCloseCode(u16),
    /// Client frames must be masked; a shared unmasked payload cannot be sent by a client.
    MaskRequired,
}

/// Opening-handshake failures; each maps to one HTTP status in [`HandshakeError::status`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HandshakeError {
    /// The bytes are not a well-formed HTTP/1.1 message.
    Malformed,
    /// The request line or headers exceed the configured cap.
    HeadersTooLarge {
        /// The cap in bytes.
        max: usize,
    },
    /// Only GET can open a WebSocket.
    Method,
    /// HTTP/1.0 or older.
    HttpVersion,
    /// No Host header.
    MissingHost,
    /// A plain HTTP request without `Upgrade: websocket` / `Connection: upgrade`.
    NotUpgrade,
    /// `Sec-WebSocket-Version` missing or other than 13.
    UnsupportedVersion,
    /// `Sec-WebSocket-Key` missing or not 16 bytes of base64.
    InvalidKey,
    /// The `Origin` is not allowed by the server's policy.
    OriginRejected,
    /// The application refused the request with this HTTP status.
    Rejected(u16),
    /// (Client) the server answered with a status other than 101.
    Status(u16),
    /// (Client) the response lacks the upgrade headers or has the wrong accept key.
    BadResponse(&'static str),
}

impl Error {
    /// The close code to send when this error ends a connection, or `None` when no close frame
    /// is sent (handshake failures, timeouts of a dead peer, usage errors, already closed).
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Error::Protocol(_) => Some(CloseCode::PROTOCOL),
            Error::InvalidUtf8 => Some(CloseCode::INVALID_PAYLOAD),
            Error::Capacity(_) => Some(CloseCode::TOO_BIG),
            Error::Timeout(TimeoutKind::Idle) => Some(CloseCode::GOING_AWAY),
            Error::Timeout(TimeoutKind::CloseHandshake)
            | Error::Handshake(_)
            | Error::Usage(_)
            | Error::Closed => None,
        }
    }

    /// Whether the connection is finished after this error.
    pub fn is_fatal(&self) -> bool {
        !matches!(self, Error::Usage(_))
    }
}

impl HandshakeError {
    /// The HTTP status the server answers with.
    pub fn status(&self) -> u16 {
        match self {
            HandshakeError::Malformed
            | HandshakeError::HttpVersion
            | HandshakeError::MissingHost
            | HandshakeError::InvalidKey
            | HandshakeError::BadResponse(_) => 400,
            HandshakeError::HeadersTooLarge { .. } => 431,
            HandshakeError::Method => 405,
            HandshakeError::NotUpgrade | HandshakeError::UnsupportedVersion => 426,
            HandshakeError::OriginRejected => 403,
            HandshakeError::Rejected(status) | HandshakeError::Status(status) => *status,
        }
    }
}

impl From<ProtocolError> for Error {
    fn from(e: ProtocolError) -> Self {
        Error::Protocol(e)
    }
}

impl From<CapacityError> for Error {
    fn from(e: CapacityError) -> Self {
        Error::Capacity(e)
    }
}

impl From<HandshakeError> for Error {
    fn from(e: HandshakeError) -> Self {
        Error::Handshake(e)
    }
}

impl From<UsageError> for Error {
    fn from(e: UsageError) -> Self {
        Error::Usage(e)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Protocol(e) => write!(f, "protocol error: {e:?}"),
            Error::InvalidUtf8 => f.write_str("invalid UTF-8 in a text message or close reason"),
            Error::Capacity(CapacityError::FrameTooLong { size, max }) => {
                write!(f, "frame of {size} bytes exceeds the limit of {max}")
            }
            Error::Capacity(CapacityError::MessageTooLong { size, max }) => {
                write!(f, "message of {size} bytes exceeds the limit of {max}")
            }
            Error::Handshake(e) => e.fmt(f),
            Error::Timeout(TimeoutKind::Idle) => f.write_str("peer idle past the timeout"),
            Error::Timeout(TimeoutKind::CloseHandshake) => {
                f.write_str("peer did not answer the close frame in time")
            }
            Error::Usage(e) => write!(f, "not allowed: {e:?}"),
            Error::Closed => f.write_str("connection closed"),
        }
    }
}

impl std::error::Error for Error {}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "handshake failed with HTTP {}: {self:?}", self.status())
    }
}

impl std::error::Error for HandshakeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_by_category() {
        assert_eq!(
            Error::from(ProtocolError::UnmaskedFrame).close_code(),
            Some(CloseCode(1002))
        );
        assert_eq!(Error::InvalidUtf8.close_code(), Some(CloseCode(1007)));
        let big = CapacityError::MessageTooLong { size: 10, max: 5 };
        assert_eq!(Error::from(big).close_code(), Some(CloseCode(1009)));
        assert_eq!(
            Error::Handshake(HandshakeError::Malformed).close_code(),
            None
        );
        assert!(!Error::Usage(UsageError::ControlTooLong).is_fatal());
    }

    #[test]
    fn statuses() {
        assert_eq!(HandshakeError::UnsupportedVersion.status(), 426);
        assert_eq!(HandshakeError::HeadersTooLarge { max: 8192 }.status(), 431);
        assert_eq!(HandshakeError::OriginRejected.status(), 403);
        assert_eq!(HandshakeError::MissingHost.status(), 400);
    }
}
