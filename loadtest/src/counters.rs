//! Event counts. A worker thread counts into one [`Counters`] per one-second interval; the
//! intervals are added up per process, then across processes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Most distinct gaps kept as examples; further ones are only counted.
pub const MAX_GAPS: usize = 64;

/// A run of consecutive sequence numbers of one publisher that subscribers did not receive,
/// as detected (a later out-of-order arrival is counted under `reordered` and not taken off).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Gap {
    /// Publisher id.
    pub publisher: u32,
    /// First missing sequence number.
    pub first_seq: u64,
    /// How many consecutive numbers were missing.
    pub len: u64,
    /// How many subscribers saw this exact gap.
    pub subscribers: u64,
}

/// Counts of everything that happened; every field adds up across intervals and workers except
/// where noted.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    /// `connect()` calls made.
    pub attempted: u64,
    /// TCP connections completed.
    pub connected: u64,
    /// WebSocket handshakes completed (`101` checked).
    pub established: u64,
    /// Connections that failed before TCP completed.
    pub connect_failed: u64,
    /// Connections that failed during the opening handshake.
    pub handshake_failed: u64,
    /// Established connections that ended before the load generator closed them.
    pub closed_early: u64,
    /// Connections the load generator closed at the end (close handshake completed or not).
    pub closed_by_us: u64,
    /// Established connections open when the drive phase began.
    pub open_at_go: u64,
    /// Established connections still open when the drive phase ended.
    pub survived: u64,
    /// Why connections ended, by reason label (includes the normal "closed by us").
    pub reasons: BTreeMap<String, u64>,

    /// Data messages sent (echo requests or publishes; end markers not counted).
    pub sent: u64,
    /// Data messages received.
    pub received: u64,
    /// Data messages received during the drive phase only (for rates).
    pub received_in_drive: u64,
    /// Payload bytes sent and received.
    pub bytes_sent: u64,
    /// Bytes read from sockets (all of them, headers included).
    pub bytes_read: u64,
    /// Messages not sent because the connection's write queue was full (fixed-rate mode).
    pub skipped_backpressure: u64,
    /// Messages the scenario did not expect (server `err` answers, stray frames).
    pub unexpected: u64,
    /// Pings received from the server (each answered).
    pub pings: u64,
    /// Pongs received (answers to our own pings).
    pub pongs: u64,
    /// Largest lag behind a fixed-rate schedule, microseconds (max, not sum).
    pub lag_max_us: u64,

    /// Echo replies that matched what was sent.
    pub echo_ok: u64,
    /// Echo replies that did not (wrong sequence, length, owner or content).
    pub echo_mismatch: u64,
    /// Echo requests never answered (counted when the connection ends).
    pub echo_unanswered: u64,

    /// Broadcast: subscribers open when publishing began.
    pub subscribers_at_go: u64,
    /// Broadcast: first deliveries (duplicates excluded).
    pub deliveries: u64,
    /// Broadcast: deliveries of a sequence number already received.
    pub duplicates: u64,
    /// Broadcast: deliveries that arrived after a higher sequence number.
    pub reordered: u64,
    /// Broadcast: arrivals too far behind to tell duplicate from late.
    pub stale: u64,
    /// Broadcast: messages subscribers know they missed (their publishers' end markers say how
    /// many were sent).
    pub missing: u64,
    /// Broadcast: subscribers that missed at least one message.
    pub subs_with_missing: u64,
    /// Broadcast: subscribers that received a duplicate.
    pub subs_with_duplicates: u64,
    /// Broadcast: subscribers that received something out of order.
    pub subs_with_reordering: u64,
    /// Broadcast: subscribers that did not receive every publisher's end marker.
    pub subs_incomplete: u64,
    /// Broadcast: most messages one subscriber missed (max, not sum).
    pub max_missing_per_sub: u64,
    /// Broadcast: examples of gaps (at most [`MAX_GAPS`] distinct ones).
    pub gaps: Vec<Gap>,
    /// Broadcast: distinct gaps seen beyond the [`MAX_GAPS`] kept.
    pub gaps_dropped: u64,

    /// Subscriptions the server confirmed (`ok sub T`, or a `v1` subscribe reply).
    pub subscribed: u64,
    /// v1: publishes the server acknowledged with an offset.
    pub publish_acks: u64,
    /// v1: publishes the server answered with an error.
    pub publish_errors: u64,
    /// v1: publications dropped because their offset had been handled already (live pushes
    /// that arrived again in a recovery, or before the subscribe reply): the protocol's own
    /// deduplication, not a fault.
    pub offsets_skipped: u64,
    /// v1: publications delivered from subscribe replies that bridged the gap since the
    /// subscriber's position (recovered after a reconnect).
    pub recovered: u64,
    /// v1: resubscribes the server answered `recovered: false` (history trimmed, or a new
    /// epoch).
    pub recovery_refused: u64,

    /// Failover: subscriber connections that dropped during the run (each reconnected, or tried).
    pub drops: u64,
    /// Failover: connection attempts to come back after a drop.
    pub reconnect_attempts: u64,
    /// Failover: attempts that failed (connect, handshake, or dropped before subscribing).
    pub reconnect_failed: u64,
    /// Failover: subscribers live again after a drop.
    pub resubscribed: u64,
    /// Failover: subscribers still away at the end of the run.
    pub reconnect_gave_up: u64,
    /// Failover: subscribers that dropped at least once (counted when they end).
    pub subs_dropped: u64,
    /// Failover: messages missed by subscribers that dropped (counted when they end).
    pub lost_by_dropped: u64,
    /// Failover: subscribers that dropped and missed something.
    pub dropped_subs_with_loss: u64,
    /// Failover: most messages one subscriber that dropped missed (max, not sum).
    pub max_lost_per_dropped_sub: u64,
}

impl Counters {
    /// Counts one connection ending for `reason`.
    pub fn reason(&mut self, reason: &str) {
        self.reason_n(reason, 1);
    }

    /// Counts `n` connections ending for `reason`.
    pub fn reason_n(&mut self, reason: &str, n: u64) {
        match self.reasons.get_mut(reason) {
            Some(count) => *count += n,
            None => {
                self.reasons.insert(reason.to_owned(), n);
            }
        }
    }

    /// Records that `subscribers` subscribers missed the run `first_seq..first_seq + len` of
    /// `publisher`.
    pub fn gap(&mut self, publisher: u32, first_seq: u64, len: u64, subscribers: u64) {
        if let Some(g) = self
            .gaps
            .iter_mut()
            .find(|g| (g.publisher, g.first_seq, g.len) == (publisher, first_seq, len))
        {
            g.subscribers += subscribers;
        } else if self.gaps.len() < MAX_GAPS {
            self.gaps.push(Gap {
                publisher,
                first_seq,
                len,
                subscribers,
            });
            self.gaps.sort();
        } else {
            self.gaps_dropped += 1;
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        let Counters {
            attempted,
            connected,
            established,
            connect_failed,
            handshake_failed,
            closed_early,
            closed_by_us,
            open_at_go,
            survived,
            reasons,
            sent,
            received,
            received_in_drive,
            bytes_sent,
            bytes_read,
            skipped_backpressure,
            unexpected,
            pings,
            pongs,
            lag_max_us,
            echo_ok,
            echo_mismatch,
            echo_unanswered,
            subscribers_at_go,
            deliveries,
            duplicates,
            reordered,
            stale,
            missing,
            subs_with_missing,
            subs_with_duplicates,
            subs_with_reordering,
            subs_incomplete,
            max_missing_per_sub,
            gaps,
            gaps_dropped,
            subscribed,
            publish_acks,
            publish_errors,
            offsets_skipped,
            recovered,
            recovery_refused,
            drops,
            reconnect_attempts,
            reconnect_failed,
            resubscribed,
            reconnect_gave_up,
            subs_dropped,
            lost_by_dropped,
            dropped_subs_with_loss,
            max_lost_per_dropped_sub,
        } = other;
        self.attempted += attempted;
        self.connected += connected;
        self.established += established;
        self.connect_failed += connect_failed;
        self.handshake_failed += handshake_failed;
        self.closed_early += closed_early;
        self.closed_by_us += closed_by_us;
        self.open_at_go += open_at_go;
        self.survived += survived;
        for (k, v) in reasons {
            *self.reasons.entry(k.clone()).or_insert(0) += v;
        }
        self.sent += sent;
        self.received += received;
        self.received_in_drive += received_in_drive;
        self.bytes_sent += bytes_sent;
        self.bytes_read += bytes_read;
        self.skipped_backpressure += skipped_backpressure;
        self.unexpected += unexpected;
        self.pings += pings;
        self.pongs += pongs;
        self.lag_max_us = self.lag_max_us.max(*lag_max_us);
        self.echo_ok += echo_ok;
        self.echo_mismatch += echo_mismatch;
        self.echo_unanswered += echo_unanswered;
        self.subscribers_at_go += subscribers_at_go;
        self.deliveries += deliveries;
        self.duplicates += duplicates;
        self.reordered += reordered;
        self.stale += stale;
        self.missing += missing;
        self.subs_with_missing += subs_with_missing;
        self.subs_with_duplicates += subs_with_duplicates;
        self.subs_with_reordering += subs_with_reordering;
        self.subs_incomplete += subs_incomplete;
        self.max_missing_per_sub = self.max_missing_per_sub.max(*max_missing_per_sub);
        for g in gaps {
            self.gap(g.publisher, g.first_seq, g.len, g.subscribers);
        }
        self.gaps_dropped += gaps_dropped;
        self.subscribed += subscribed;
        self.publish_acks += publish_acks;
        self.publish_errors += publish_errors;
        self.offsets_skipped += offsets_skipped;
        self.recovered += recovered;
        self.recovery_refused += recovery_refused;
        self.drops += drops;
        self.reconnect_attempts += reconnect_attempts;
        self.reconnect_failed += reconnect_failed;
        self.resubscribed += resubscribed;
        self.reconnect_gave_up += reconnect_gave_up;
        self.subs_dropped += subs_dropped;
        self.lost_by_dropped += lost_by_dropped;
        self.dropped_subs_with_loss += dropped_subs_with_loss;
        self.max_lost_per_dropped_sub =
            self.max_lost_per_dropped_sub.max(*max_lost_per_dropped_sub);
    }

    /// Connections that ended for a reason other than the load generator closing them.
    pub fn failures(&self) -> u64 {
        self.connect_failed + self.handshake_failed + self.closed_early
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_adds_sums_and_keeps_maxima() {
        let mut a = Counters {
            attempted: 3,
            lag_max_us: 10,
            max_missing_per_sub: 2,
            ..Counters::default()
        };
        a.reason("eof");
        a.gap(0, 5, 1, 2);
        let mut b = Counters {
            attempted: 4,
            lag_max_us: 7,
            max_missing_per_sub: 5,
            ..Counters::default()
        };
        b.reason("eof");
        b.reason("closed by server: 1001");
        b.gap(0, 5, 1, 3);
        b.gap(1, 9, 2, 1);
        a.merge(&b);
        assert_eq!(a.attempted, 7);
        assert_eq!(a.lag_max_us, 10);
        assert_eq!(a.max_missing_per_sub, 5);
        assert_eq!(a.reasons["eof"], 2);
        assert_eq!(a.reasons["closed by server: 1001"], 1);
        assert_eq!(
            a.gaps,
            vec![
                Gap {
                    publisher: 0,
                    first_seq: 5,
                    len: 1,
                    subscribers: 5
                },
                Gap {
                    publisher: 1,
                    first_seq: 9,
                    len: 2,
                    subscribers: 1
                },
            ]
        );
    }

    #[test]
    fn gap_examples_are_capped() {
        let mut c = Counters::default();
        for i in 0..(MAX_GAPS as u64 + 10) {
            c.gap(0, i * 10, 1, 1);
        }
        assert_eq!(c.gaps.len(), MAX_GAPS);
        assert_eq!(c.gaps_dropped, 10);
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let mut c = Counters {
            sent: 9,
            ..Counters::default()
        };
        c.reason("x");
        let text = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<Counters>(&text).unwrap(), c);
        let partial: Counters = serde_json::from_str(r#"{"sent": 2}"#).unwrap();
        assert_eq!(partial.sent, 2);
    }
}
