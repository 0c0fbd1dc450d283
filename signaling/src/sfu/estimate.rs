//! A subscriber's bandwidth estimate: send-side congestion control on what the SFU sends it.
//!
//! Every packet the SFU sends a participant carries a transport-wide sequence number (the
//! `transport-cc` header extension, written by webrtc-rs's TWCC sender interceptor); the
//! participant reports which arrived and when, and webrtc-rs's Google Congestion Control
//! (`Gcc`: a delay half and a loss half, the lower wins) turns those reports into the bitrate
//! the path to it looks able to carry. The SFU does not pace to that number (it forwards at the
//! publishers' pace); it uses it to choose each subscriber's simulcast layers
//! ([`super::simulcast::target`]).
//!
//! The estimator lives boxed inside the peer connection's interceptor chain, out of the SFU's
//! reach, so it is wrapped: the wrapper delegates every call and publishes the target into a
//! shared cell after each call that can move it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use rtc::interceptor::{BandwidthEstimator, EstimatorStats, Gcc, PacketReport};

/// Where GCC starts once reports arrive: high enough not to hold back any layer until they
/// show a limit (before the first report the SFU sees no estimate at all).
pub const INITIAL: f64 = 10_000_000.0;
/// The floor (GCC's default).
pub const MIN: f64 = 100_000.0;
/// The ceiling.
pub const MAX: f64 = 100_000_000.0;

/// The estimate as the SFU reads it: bits per second, once the participant has reported.
#[derive(Debug, Clone)]
pub struct Estimate(Arc<AtomicU64>);

impl Estimate {
    /// The current estimate, in bits per second; `None` until the first feedback (a
    /// participant that does not report has none).
    pub fn bits_per_second(&self) -> Option<f64> {
        let bps = f64::from_bits(self.0.load(Relaxed));
        (!bps.is_nan()).then_some(bps)
    }

    fn set(&self, bps: f64) {
        self.0.store(bps.to_bits(), Relaxed);
    }
}

/// A [`Gcc`] that publishes its target into an [`Estimate`].
pub struct Reporting {
    inner: Gcc,
    out: Estimate,
}

/// A fresh estimator for one participant, and the estimate it keeps up to date.
pub fn estimator() -> (Reporting, Estimate) {
    let inner = Gcc::new(INITIAL, MIN, MAX);
    let out = Estimate(Arc::new(AtomicU64::new(f64::NAN.to_bits())));
    (
        Reporting {
            inner,
            out: out.clone(),
        },
        out,
    )
}

impl std::fmt::Debug for Reporting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporting")
            .field("target", &self.inner.target_bitrate())
            .finish_non_exhaustive()
    }
}

impl BandwidthEstimator for Reporting {
    fn on_reports(&mut self, now: Instant, reports: &[PacketReport]) {
        self.inner.on_reports(now, reports);
        if !reports.is_empty() {
            self.out.set(self.inner.target_bitrate());
        }
    }

    fn target_bitrate(&self) -> f64 {
        self.inner.target_bitrate()
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.inner.handle_timeout(now);
        if self.out.bits_per_second().is_some() {
            self.out.set(self.inner.target_bitrate());
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        self.inner.poll_timeout()
    }

    fn stats(&self) -> EstimatorStats {
        self.inner.stats()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn report(id: u64, departure: Instant, arrived: bool) -> PacketReport {
        PacketReport {
            ssrc: 1,
            id,
            rtp_sequence_number: id as u16,
            is_twcc: true,
            twcc_sequence_number: id as u16,
            size: 1200,
            arrived,
            departure,
            arrival: arrived.then(|| Duration::from_millis(id)),
            ecn: Default::default(),
        }
    }

    #[test]
    fn heavy_loss_in_the_reports_lowers_the_published_estimate() {
        let (mut gcc, estimate) = estimator();
        assert_eq!(estimate.bits_per_second(), None);
        gcc.handle_timeout(Instant::now());
        assert_eq!(estimate.bits_per_second(), None);
        let start = Instant::now();
        // Two seconds of reports, 40% of the packets lost, a batch every 100 ms.
        let mut id = 0;
        for batch in 0..20u64 {
            let now = start + Duration::from_millis(100 * batch);
            let reports: Vec<PacketReport> = (0..10)
                .map(|k| {
                    id += 1;
                    report(id, now, k % 5 >= 2)
                })
                .collect();
            gcc.on_reports(now, &reports);
        }
        let after = estimate.bits_per_second().unwrap();
        assert!(after < INITIAL / 2.0, "estimate still {after}");
        assert_eq!(after, gcc.target_bitrate());
    }
}
