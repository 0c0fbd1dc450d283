//! What the connection hands to the application.

use std::borrow::Cow;

use super::close::CloseFrame;

/// A complete data message.
///
/// Unfragmented messages borrow their payload from the caller's read buffer, unmasked in place;
/// only a message that arrived in fragments owns a buffer (the reassembled bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A text message, already validated as UTF-8.
    Text(Cow<'a, str>),
    /// A binary message.
    Binary(Cow<'a, [u8]>),
}

impl Message<'_> {
    /// The payload bytes.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// Whether this is a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
}

/// One thing that happened on a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message.
    Message(Message<'a>),
    /// A ping; when `Config::auto_pong` is set the pong has already been written.
    Ping(&'a [u8]),
    /// A pong.
    Pong(&'a [u8]),
    /// The peer's close frame (`None` when it had no body). The close handshake is complete from
    /// our side: any reply was written, and the connection is now closed; flush the output and
    /// close the transport.
    Close(Option<CloseFrame<'a>>),
}

/// The result of one [`Connection::recv`](super::Connection::recv) call.
#[must_use = "a Frame result says how many input bytes were consumed"]
#[derive(Debug, PartialEq, Eq)]
pub enum Read<'a> {
    /// The input does not hold a whole frame yet; nothing was consumed. `frame_len` is the whole
    /// frame's size once its header is complete, so a caller can reserve exactly that much.
    Incomplete {
        /// Size of the whole frame, when the header has been seen.
        frame_len: Option<usize>,
    },
    /// One frame was consumed: drop `consumed` bytes from the front of the input.
    Frame {
        /// Bytes of input this frame took.
        consumed: usize,
        /// What it produced, if anything (a non-final fragment produces nothing).
        event: Option<Event<'a>>,
    },
}
