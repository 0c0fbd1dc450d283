//! Mail between shards, and from any thread to a shard: a channel per shard and a waker for
//! its poll or ring. A wake is skipped when one is already pending.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::Sender;

use super::app::SharedFrame;
use super::id::ConnId;
use super::upgrade::Upgrade;
use crate::proto::CloseCode;

/// Messages between shards. A publish is one message per shard, whatever the subscriber count.
pub enum Mail {
    /// Deliver an encoded frame to this shard's subscribers of `topic`.
    Publish {
        /// Topic name.
        topic: Arc<str>,
        /// The frame, shared with every other shard.
        frame: SharedFrame,
    },
    /// The broker confirmed `topic`: this shard's subscribers waiting for it are told.
    Live {
        /// Topic name.
        topic: Arc<str>,
    },
    /// Deliver a frame to one connection of this shard.
    Send {
        /// Recipient.
        id: ConnId,
        /// The frame.
        frame: SharedFrame,
    },
    /// Close one connection of this shard.
    Close {
        /// Which.
        id: ConnId,
        /// Close code.
        code: CloseCode,
        /// Reason text.
        reason: String,
    },
    /// Hand `payload` to application `app` on this shard.
    Post {
        /// Application index.
        app: u8,
        /// Anything.
        payload: Box<dyn Any + Send>,
    },
    /// The application's answer to an upgrade it deferred.
    Answer {
        /// The connection.
        id: ConnId,
        /// Accept or reject (a `Defer` here is ignored).
        upgrade: Upgrade,
    },
    /// Stop accepting, close every connection with 1001, and exit after the drain.
    Shutdown,
}

/// What wakes a sleeping shard.
#[derive(Debug)]
pub enum Waker {
    /// Its epoll (through mio).
    Mio(mio::Waker),
    /// An eventfd its ring keeps a read pending on.
    EventFd(nix::sys::eventfd::EventFd),
}

impl Waker {
    fn wake(&self) {
        match self {
            Waker::Mio(w) => {
                let _ = w.wake();
            }
            Waker::EventFd(fd) => {
                let _ = fd.write(1);
            }
        }
    }
}

/// How to reach a shard from any thread.
pub struct Peer {
    /// Its mailbox.
    pub tx: Sender<Mail>,
    /// Wakes its poll or ring.
    pub waker: Waker,
    /// A wake is already pending: further mail needs no extra syscall.
    pub pending: AtomicBool,
    /// Mail posted and not read yet.
    pub queued: AtomicUsize,
    /// Past this many queued, data mail (publishes, sends, posts) is dropped and counted: a
    /// shard that cannot keep up must not make the others hold unbounded memory for it.
    /// Control mail (closes, upgrade answers, confirmations, shutdown) always goes through.
    pub limit: usize,
    /// Data mail dropped at the limit.
    pub dropped: AtomicU64,
}

impl Peer {
    /// A shard's mailbox entry.
    pub fn new(tx: Sender<Mail>, waker: Waker, limit: usize) -> Self {
        Peer {
            tx,
            waker,
            pending: AtomicBool::new(false),
            queued: AtomicUsize::new(0),
            limit,
            dropped: AtomicU64::new(0),
        }
    }

    /// Posts `mail` and wakes the shard unless a wake is already pending. Data mail past the
    /// limit is dropped (and counted) instead.
    pub fn send(&self, mail: Mail) {
        let data = matches!(
            mail,
            Mail::Publish { .. } | Mail::Send { .. } | Mail::Post { .. }
        );
        if data && self.queued.load(Ordering::Relaxed) >= self.limit {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(mail).is_err() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return;
        }
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }

    /// Wakes the shard (it has mail left over from a budgeted read).
    pub fn wake(&self) {
        if !self.pending.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}
