//! Budgets for what clients can ask of a node, each a documented setting:
//! - [`WorkQueue`]: expensive work (password hashing): a few run at once, a bounded number
//!   wait, and the rest are told to come back (`429 Too Many Requests` with `Retry-After`)
//!   instead of piling up memory and threads;
//! - [`Limiter`]: requests per minute per client address or account (logins, guests,
//!   searches, uploads), the same answer past it;
//! - [`Bucket`]: one connection's own rate (a phone's messages and seat attempts).
//!
//! A job holds its slot until it has *finished*, not until its client hangs up: the slot is
//! moved into the blocking task, so a client that leaves after two seconds does not free a
//! slot while its work goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Semaphore;

/// Refused for now: try again after `retry_after_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}; try again in {retry_after_s} s")]
pub struct Busy {
    /// Why, for a person ("password checking is busy").
    pub reason: &'static str,
    pub retry_after_s: u64,
}

/// At most `per_minute` requests a minute for each key (a client address, an account), the
/// minute's worth allowed at once; 0 turns it off. Keys idle for a minute are forgotten by
/// [`Limiter::forget_idle`], so a stream of new addresses does not grow it for good.
pub struct Limiter<K: std::hash::Hash + Eq + Clone> {
    reason: &'static str,
    inner: Option<governor::DefaultKeyedRateLimiter<K>>,
}

impl<K: std::hash::Hash + Eq + Clone> Limiter<K> {
    /// `reason` is the refusal's words ("too many logins from this address").
    pub fn per_minute(reason: &'static str, per_minute: u32) -> Self {
        let inner = std::num::NonZeroU32::new(per_minute)
            .map(|n| governor::RateLimiter::keyed(governor::Quota::per_minute(n)));
        Limiter { reason, inner }
    }

    /// Counts one request of `key`, or refuses it.
    pub fn check(&self, key: &K) -> Result<(), Busy> {
        use governor::clock::{Clock, DefaultClock};
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        inner.check_key(key).map_err(|not_until| {
            metrics::counter!("c3s_rate_limited_total", "limit" => self.reason).increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            Busy {
                reason: self.reason,
                retry_after_s: wait.as_secs() + 1,
            }
        })
    }

    /// Drops the keys that are back to their full allowance.
    pub fn forget_idle(&self) {
        if let Some(inner) = &self.inner {
            inner.retain_recent();
            inner.shrink_to_fit();
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.inner.as_ref().map_or(0, |i| i.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The per-client request limits of one node (`*_per_min` settings).
pub struct RateLimits {
    pub logins: Limiter<std::net::IpAddr>,
    pub guests: Limiter<std::net::IpAddr>,
    pub searches: Limiter<std::net::IpAddr>,
    pub uploads: Limiter<uuid::Uuid>,
}

impl RateLimits {
    pub fn forget_idle(&self) {
        self.logins.forget_idle();
        self.guests.forget_idle();
        self.searches.forget_idle();
        self.uploads.forget_idle();
    }
}

/// A pool of `workers` slots for blocking work, with at most `max_waiting` jobs waiting.
#[derive(Debug)]
pub struct WorkQueue {
    reason: &'static str,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    max_waiting: usize,
}

impl WorkQueue {
    /// `reason` is the 429's words ("password checking is busy").
    pub fn new(reason: &'static str, workers: usize, max_waiting: usize) -> Self {
        WorkQueue {
            reason,
            slots: Arc::new(Semaphore::new(workers.max(1))),
            waiting: AtomicUsize::new(0),
            max_waiting,
        }
    }

    /// Runs `job` on the blocking pool once a slot is free, or refuses at once when
    /// `max_waiting` jobs already wait.
    pub async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Busy> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.max_waiting {
                    self.waiting.fetch_sub(1, Ordering::AcqRel);
                    metrics::counter!("c3s_busy_refusals_total", "work" => self.reason)
                        .increment(1);
                    return Err(Busy {
                        reason: self.reason,
                        retry_after_s: 1,
                    });
                }
                let _waited = Waited(&self.waiting);
                self.slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the work queue's semaphore is never closed")
            }
        };
        let done = tokio::task::spawn_blocking(move || {
            let _slot = slot;
            job()
        });
        Ok(done.await.expect("a queued job panicked"))
    }
}

/// Counts a waiting job out when it leaves the queue, whether it got its slot or its client
/// went away.
struct Waited<'a>(&'a AtomicUsize);

impl Drop for Waited<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A token bucket for one client's own rate (a phone's messages, its seat attempts): `burst`
/// at once, then `per_s` a second.
#[derive(Debug, Clone)]
pub struct Bucket {
    per_s: f64,
    burst: f64,
    tokens: f64,
    at: std::time::Instant,
}

impl Bucket {
    pub fn new(per_s: f64, burst: f64) -> Bucket {
        Bucket {
            per_s,
            burst,
            tokens: burst,
            at: std::time::Instant::now(),
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        let refill = now.duration_since(self.at).as_secs_f64() * self.per_s;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_limiter_counts_each_key_apart_and_can_be_off() {
        let limiter = Limiter::per_minute("too many tries", 2);
        assert!(limiter.check(&1).is_ok() && limiter.check(&1).is_ok());
        let refused = limiter.check(&1).unwrap_err();
        assert_eq!(refused.reason, "too many tries");
        assert!((1..=31).contains(&refused.retry_after_s), "{refused:?}");
        assert!(
            limiter.check(&2).is_ok(),
            "another key has its own allowance"
        );
        let off = Limiter::per_minute("off", 0);
        assert!((0..1000).all(|_| off.check(&1).is_ok()));
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = Bucket::new(10.0, 3.0);
        assert!((0..3).all(|_| bucket.take()));
        assert!(!bucket.take(), "the burst is spent");
        std::thread::sleep(Duration::from_millis(120));
        assert!(bucket.take(), "a tenth of a second brings one back");
        assert!(!bucket.take());
    }

    #[tokio::test]
    async fn refuses_beyond_the_waiting_room_and_keeps_slots_while_jobs_run() {
        let queue = Arc::new(WorkQueue::new("test work is busy", 1, 1));
        let (release, hold) = std::sync::mpsc::channel::<()>();
        let running = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.run(move || hold.recv().is_ok()).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // one waits ...
        let waiting = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.run(|| 2).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        // ... and the next is refused
        assert_eq!(
            queue.run(|| 3).await,
            Err(Busy {
                reason: "test work is busy",
                retry_after_s: 1
            })
        );
        // a waiting client that leaves gives its place back; the running job keeps its slot
        waiting.abort();
        let _ = waiting.await;
        let next = {
            let queue = queue.clone();
            tokio::spawn(async move { queue.run(|| 4).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !next.is_finished(),
            "the slot is still held by the running job"
        );
        release.send(()).unwrap();
        assert_eq!(running.await.unwrap(), Ok(true));
        assert_eq!(next.await.unwrap(), Ok(4));
    }
}
