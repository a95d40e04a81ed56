//! Admission: phones joining wait their turn instead of being turned away. Every join on a
//! node goes into one queue (`join_queue` long); one writer takes everything waiting (up to
//! `join_batch` at once) and answers it with one batch of statements
//! ([`store::joins::join_many`]): a stadium arriving in the minutes before a show is a few
//! commits a second, not one per phone. When the database is slow or away for a moment the
//! writer retries the same batch, and the phones wait (each told it is queued, see
//! `ServerMsg::Queued`); only a full queue, or a database gone for `JOIN_PATIENCE`, turns a
//! phone away (4005).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::store::{self, joins::Answer, joins::Ask};

/// How long the writer keeps retrying a batch the database cannot take before it answers
/// its phones "unavailable" (they come back by themselves).
const JOIN_PATIENCE: Duration = Duration::from_secs(30);
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

struct Request {
    ask: Ask,
    reply: oneshot::Sender<Result<Answer, Unavailable>>,
}

/// The database could not take the join in time.
#[derive(Debug, Clone, Copy)]
pub struct Unavailable;

/// The queue was full: the phone should come back later.
#[derive(Debug, Clone, Copy)]
pub struct QueueFull;

/// This node's join queue and its writer.
pub struct Joins {
    queue: mpsc::Sender<Request>,
    /// Joins queued and not yet taken by the writer.
    waiting: Arc<AtomicUsize>,
}

impl Joins {
    /// Starts the writer, which ends when the queue's last sender (this) is dropped.
    pub fn start(pool: PgPool, queue_len: usize, batch: usize, device_ttl_days: i64) -> Joins {
        let (tx, rx) = mpsc::channel(queue_len.max(1));
        let waiting = Arc::new(AtomicUsize::new(0));
        tokio::spawn(write(
            pool,
            rx,
            waiting.clone(),
            batch.max(1),
            device_ttl_days,
        ));
        Joins { queue: tx, waiting }
    }

    /// Queues a join; the answer comes on the returned channel.
    pub fn ask(
        &self,
        ask: Ask,
    ) -> Result<oneshot::Receiver<Result<Answer, Unavailable>>, QueueFull> {
        let (reply, answer) = oneshot::channel();
        self.waiting.fetch_add(1, Ordering::Relaxed);
        match self.queue.try_send(Request { ask, reply }) {
            Ok(()) => Ok(answer),
            Err(_) => {
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                metrics::counter!("c3s_joins_refused_total", "why" => "queue_full").increment(1);
                Err(QueueFull)
            }
        }
    }

    /// Joins waiting for the writer (a phone is told roughly how many are ahead of it).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }
}

/// The writer: everything waiting as one batch, retried while the database cannot take it.
async fn write(
    pool: PgPool,
    mut queue: mpsc::Receiver<Request>,
    waiting: Arc<AtomicUsize>,
    max_batch: usize,
    device_ttl_days: i64,
) {
    let mut batch: Vec<Request> = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        waiting.fetch_sub(batch.len(), Ordering::Relaxed);
        metrics::gauge!("c3s_join_queue").set(waiting.load(Ordering::Relaxed) as f64);
        // phones that hung up while they waited are not written
        batch.retain(|r| !r.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let asks: Vec<Ask> = batch.iter().map(|r| r.ask.clone()).collect();
        let answers = write_batch(&pool, &asks, device_ttl_days).await;
        metrics::histogram!("c3s_join_batch_size").record(asks.len() as f64);
        match answers {
            Ok(answers) => {
                for (request, answer) in batch.drain(..).zip(answers) {
                    let _ = request.reply.send(Ok(answer));
                }
            }
            Err(()) => {
                for request in batch.drain(..) {
                    let _ = request.reply.send(Err(Unavailable));
                }
            }
        }
    }
}

/// One batch, retried with backoff on errors that pass (a pool timeout, a lost connection,
/// PostgreSQL restarting) for up to `JOIN_PATIENCE`.
async fn write_batch(pool: &PgPool, asks: &[Ask], device_ttl_days: i64) -> Result<Vec<Answer>, ()> {
    let started = tokio::time::Instant::now();
    let mut pause = RETRY_FIRST;
    loop {
        let expires = chrono::Utc::now() + chrono::Duration::days(device_ttl_days);
        match store::joins::join_many(pool, asks, expires).await {
            Ok(answers) => return Ok(answers),
            Err(e) if passes(&e) && started.elapsed() + pause < JOIN_PATIENCE => {
                tracing::warn!(error = ?e, phones = asks.len(), "joins wait for the database");
                metrics::counter!("c3s_join_batch_retries_total").increment(1);
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(RETRY_MAX);
            }
            Err(e) => {
                tracing::error!(error = ?e, phones = asks.len(), "joins failed");
                return Err(());
            }
        }
    }
}

/// Whether an error is the database being busy or away for a moment (worth waiting for).
fn passes(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) => true,
        // admin shutdown, cannot connect now, too many connections, serialization
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            c.starts_with("57") || c.starts_with("08") || c == "53300" || c == "40001"
        }),
        _ => false,
    }
}
