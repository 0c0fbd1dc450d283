//! [`Handle`]: the server as seen from any thread (a broker's thread, an async runtime, a
//! test): `Send + Sync + Clone`, cheap to clone, valid as long as anyone holds it. Everything
//! it does is a message to the shard concerned; delivery is asynchronous and a stale
//! [`ConnId`] is dropped silently on arrival.

use std::any::Any;
use std::sync::Arc;

use super::app::{SendError, SharedFrame};
use super::broker::{Broker, Registry};
use super::id::ConnId;
use super::mailbox::{Mail, Peer};
use super::upgrade::{Accept, Upgrade};
use crate::proto::CloseCode;

/// An application's index among the server's routes, for [`Handle::post`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AppId(pub(crate) u8);

/// What every shard and handle share.
pub(crate) struct Shared {
    pub(crate) peers: Vec<Peer>,
    pub(crate) registry: Registry,
    pub(crate) broker: Option<Arc<dyn Broker>>,
    pub(crate) paths: Vec<String>,
    /// Per-source and process-wide limits on new connections.
    pub(crate) admission: Arc<super::admission::Admission>,
    /// Bytes of partial input held across every shard ([`super::budget`]).
    pub(crate) partial_input: super::budget::Budget,
    /// wss://: the certificate and rustls' settings, when connections speak TLS.
    pub(crate) tls: Option<Arc<super::tls::Acceptor>>,
}

/// The server, from any thread.
#[derive(Clone)]
pub struct Handle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("shards", &self.shared.peers.len())
            .field("broker", &self.shared.broker.is_some())
            .finish()
    }
}

impl Handle {
    /// How many shards the server runs.
    pub fn shards(&self) -> u16 {
        self.shared.peers.len() as u16
    }

    /// Whether a broker carries publishes to other processes (else the process is its own).
    pub fn has_broker(&self) -> bool {
        self.shared.broker.is_some()
    }

    /// The application serving `path`.
    pub fn app(&self, path: &str) -> Option<AppId> {
        let i = self.shared.paths.iter().position(|p| p == path)?;
        Some(AppId(i as u8))
    }

    fn mail(&self, shard: u16, mail: Mail) -> Result<(), SendError> {
        let peer = self
            .shared
            .peers
            .get(usize::from(shard))
            .ok_or(SendError::Gone)?;
        peer.send(mail);
        Ok(())
    }

    /// Sends a frame to one connection.
    pub fn send(&self, id: ConnId, frame: &SharedFrame) -> Result<(), SendError> {
        let frame = frame.clone();
        self.mail(id.shard(), Mail::Send { id, frame })
    }

    /// Sends a text message to one connection.
    pub fn send_text(&self, id: ConnId, text: &str) -> Result<(), SendError> {
        self.send(id, &SharedFrame::text(text))
    }

    /// Starts the close handshake on a connection.
    pub fn close(&self, id: ConnId, code: CloseCode, reason: &str) -> Result<(), SendError> {
        let reason = reason.to_owned();
        self.mail(id.shard(), Mail::Close { id, code, reason })
    }

    /// Publishes to every subscriber of `topic`: through the broker when there is one, else
    /// straight to the shards that have subscribers.
    pub fn publish(&self, topic: &str, frame: &SharedFrame) {
        match &self.shared.broker {
            Some(broker) => broker.publish(topic, frame),
            None => {
                self.deliver(topic, frame);
            }
        }
    }

    /// Delivers a frame to this process's subscribers of `topic`, bypassing the broker: one
    /// message to each shard that has subscribers, the frame shared by all. This is how a
    /// broker hands back what it received. Returns the number of shards mailed.
    pub fn deliver(&self, topic: &str, frame: &SharedFrame) -> usize {
        let shards = self.shared.registry.shards(topic);
        let name: Arc<str> = Arc::from(topic);
        let mut mailed = 0;
        for shard in shards.iter() {
            let frame = frame.clone();
            let topic = name.clone();
            if self.mail(shard, Mail::Publish { topic, frame }).is_ok() {
                mailed += 1;
            }
        }
        mailed
    }

    /// The broker's upstream subscription to `topic` is in place: the subscribers waiting for
    /// it are told ([`App::on_subscribed`](super::App::on_subscribed)).
    pub fn confirm(&self, topic: &str) {
        let shards = self.shared.registry.confirm(topic);
        let name: Arc<str> = Arc::from(topic);
        for shard in shards.iter() {
            let _ = self.mail(
                shard,
                Mail::Live {
                    topic: name.clone(),
                },
            );
        }
    }

    /// Hands `payload` to application `app` on `shard` (its `on_post`).
    pub fn post(
        &self,
        shard: u16,
        app: AppId,
        payload: Box<dyn Any + Send>,
    ) -> Result<(), SendError> {
        self.mail(
            shard,
            Mail::Post {
                app: app.0,
                payload,
            },
        )
    }

    /// Accepts an upgrade the application deferred.
    pub fn accept_upgrade(&self, id: ConnId, accept: Accept) -> Result<(), SendError> {
        let upgrade = Upgrade::Accept(accept);
        self.mail(id.shard(), Mail::Answer { id, upgrade })
    }

    /// Refuses a deferred upgrade with an HTTP status.
    pub fn reject_upgrade(&self, id: ConnId, status: u16) -> Result<(), SendError> {
        let upgrade = Upgrade::Reject(status);
        self.mail(id.shard(), Mail::Answer { id, upgrade })
    }

    /// Starts a graceful shutdown of every shard.
    pub fn shutdown(&self) {
        for peer in &self.shared.peers {
            peer.send(Mail::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_crosses_threads() {
        fn send_sync_clone<T: Send + Sync + Clone + 'static>() {}
        send_sync_clone::<Handle>();
    }
}
