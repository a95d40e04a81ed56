//! Server time, and the NTP-style maths of clock synchronisation.
//!
//! Server time is microseconds since the Unix epoch, read from a monotonic clock anchored once
//! to the system clock when the process starts: it never jumps backwards, and nodes whose
//! system clocks are NTP-disciplined agree on it (DESIGN.md, "Time").
//!
//! The phone does the filtering (it sees its own clock); the server only stamps. The maths is
//! here so that tests, the load generator and the docs share one definition.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Anchor {
    instant: Instant,
    unix_us: i64,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| Anchor {
        instant: Instant::now(),
        unix_us: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i64)
            .unwrap_or(0),
    })
}

/// Server time now, in microseconds since the Unix epoch (monotonic within this process).
pub fn now_us() -> i64 {
    let a = anchor();
    a.unix_us + a.instant.elapsed().as_micros() as i64
}

/// Server time now, in whole milliseconds (the unit of playback instants).
pub fn now_ms() -> i64 {
    now_us().div_euclid(1000)
}

/// One four-timestamp exchange: the client sends at `t0` (its clock), the server receives at
/// `t1` and replies at `t2` (server clock), the client receives at `t3` (its clock). All in the
/// same unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyncSample {
    pub t0: f64,
    pub t1: f64,
    pub t2: f64,
    pub t3: f64,
}

impl SyncSample {
    /// Server clock minus client clock, exact when the two legs take equally long.
    pub fn offset(&self) -> f64 {
        ((self.t1 - self.t0) + (self.t2 - self.t3)) / 2.0
    }

    /// Round-trip time on the network (the server's own processing time taken out).
    pub fn delay(&self) -> f64 {
        (self.t3 - self.t0) - (self.t2 - self.t1)
    }

    /// The true offset lies within `offset ± delay/2`, whatever the asymmetry of the legs.
    pub fn error_bound(&self) -> f64 {
        self.delay() / 2.0
    }
}

/// The NTP clock filter: of a window of samples, trust the one with the lowest delay (the
/// least queueing, so the least asymmetry). Returns (offset, error bound).
pub fn best_estimate(samples: &[SyncSample]) -> Option<(f64, f64)> {
    samples
        .iter()
        .min_by(|a, b| a.delay().total_cmp(&b.delay()))
        .map(|s| (s.offset(), s.error_bound()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client whose clock is `true_offset` behind the server, with given one-way delays and
    /// server processing time.
    fn exchange(true_offset: f64, send_at: f64, up: f64, down: f64, processing: f64) -> SyncSample {
        let t0 = send_at;
        let t1 = t0 + up + true_offset;
        let t2 = t1 + processing;
        let t3 = t2 - true_offset + down;
        SyncSample { t0, t1, t2, t3 }
    }

    #[test]
    fn symmetric_delay_gives_the_exact_offset() {
        let s = exchange(1234.5, 1000.0, 20.0, 20.0, 0.3);
        assert!((s.offset() - 1234.5).abs() < 1e-9);
        assert!((s.delay() - 40.0).abs() < 1e-9);
    }

    #[test]
    fn asymmetric_delay_errs_by_half_the_difference_within_the_bound() {
        let s = exchange(-500.0, 0.0, 80.0, 10.0, 1.0);
        let err = s.offset() - -500.0;
        assert!((err - 35.0).abs() < 1e-9, "error is (up - down) / 2");
        assert!(err.abs() <= s.error_bound() + 1e-9);
    }

    #[test]
    fn the_filter_prefers_the_least_delayed_sample() {
        let samples = [
            exchange(100.0, 0.0, 200.0, 5.0, 0.1),
            exchange(100.0, 10.0, 3.0, 3.5, 0.1),
            exchange(100.0, 20.0, 5.0, 90.0, 0.1),
        ];
        let (offset, bound) = best_estimate(&samples).unwrap();
        assert!((offset - 100.0).abs() < 0.3);
        assert!(bound < 4.0);
        assert!(best_estimate(&[]).is_none());
    }

    #[test]
    fn server_time_is_monotonic_and_near_the_system_clock() {
        let a = now_us();
        let b = now_us();
        assert!(b >= a);
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_micros() as i64;
        assert!((system - b).abs() < 1_000_000);
    }
}
