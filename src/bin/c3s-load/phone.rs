//! One simulated phone: connects from its own source address, syncs its (deliberately wrong)
//! clock, and receives chunks, measuring against the truth it shares with the server: this
//! machine's clock.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use c3s::clock::{self, best_estimate, SyncSample};
use c3s::dataplane::chunk;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::netem::{self, Leg};

/// Tries a phone makes to join before it gives up.
const JOIN_ATTEMPTS: u32 = 6;
/// Time between a phone's clock-sync exchanges when it joins.
const SYNC_SPACING: Duration = Duration::from_millis(30);

pub struct PhoneSpec {
    pub index: usize,
    pub server: SocketAddr,
    pub source: IpAddr,
    pub scene_id: Uuid,
    pub up: Leg,
    pub down: Leg,
    /// This phone's clock is off by this much (ms): what sync must find.
    pub clock_skew_ms: f64,
    /// Clock-sync exchanges it makes when it joins.
    pub sync_samples: usize,
    /// How long after its welcome it syncs.
    pub sync_delay: Duration,
    /// It keeps every chunk it gets (a clip show's colour check).
    pub record: bool,
}

/// What one phone measured.
#[derive(Debug, Default, Clone)]
pub struct PhoneReport {
    pub connected: bool,
    pub error: Option<String>,
    /// |estimated offset − true offset|, ms.
    pub sync_err_ms: Option<f64>,
    /// estimated − true, ms (the sign tells which way its display is shifted).
    pub sync_signed_err_ms: Option<f64>,
    pub chunks: u64,
    pub stream_chunks: u64,
    pub late_chunks: u64,
    pub catch_up_chunks: u64,
    /// How long before its start instant each stream chunk arrived, ms (min over the run).
    pub min_lead_ms: Option<i64>,
    pub bytes: u64,
    pub close: Option<String>,
    pub join_retries: u32,
    /// The server said its join was queued before it was welcomed.
    pub queued: bool,
    /// Every chunk, when the phone records.
    pub recorded: Vec<chunk::Chunk>,
}

/// What all phones of the process received so far (read at intervals: a soak's minutes, the
/// measured part of a run).
#[derive(Debug, Default)]
pub struct Counters {
    pub chunks: AtomicU64,
    pub stream_chunks: AtomicU64,
    pub late_chunks: AtomicU64,
    pub bytes: AtomicU64,
    /// Phones whose socket the server closed or lost after they joined.
    pub dropped: AtomicU64,
}

/// A reading of [`Counters`].
#[derive(Debug, Default, Clone, Copy)]
pub struct Counted {
    pub chunks: u64,
    pub stream_chunks: u64,
    pub late_chunks: u64,
    pub bytes: u64,
    pub dropped: u64,
}

impl Counters {
    pub fn read(&self) -> Counted {
        Counted {
            chunks: self.chunks.load(Ordering::Relaxed),
            stream_chunks: self.stream_chunks.load(Ordering::Relaxed),
            late_chunks: self.late_chunks.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

impl std::ops::Sub for Counted {
    type Output = Counted;
    fn sub(self, o: Counted) -> Counted {
        Counted {
            chunks: self.chunks - o.chunks,
            stream_chunks: self.stream_chunks - o.stream_chunks,
            late_chunks: self.late_chunks - o.late_chunks,
            bytes: self.bytes - o.bytes,
            dropped: self.dropped - o.dropped,
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// The phone's clock: server time plus its skew, in ms.
fn phone_now_ms(skew_ms: f64) -> f64 {
    clock::now_us() as f64 / 1000.0 + skew_ms
}

pub async fn run(
    spec: PhoneSpec,
    joined: mpsc::UnboundedSender<(usize, Uuid)>,
    counters: Arc<Counters>,
    stop: CancellationToken,
) -> PhoneReport {
    let mut report = PhoneReport::default();
    // like the web client: a join that fails is retried with backoff and jitter
    for attempt in 0..JOIN_ATTEMPTS {
        match session(&spec, &joined, &counters, &stop, &mut report).await {
            Ok(()) => break,
            Err(e) if report.connected || attempt + 1 == JOIN_ATTEMPTS || stop.is_cancelled() => {
                report.error = Some(e.to_string());
                break;
            }
            Err(_) => {
                report.join_retries += 1;
                let backoff = 250.0
                    * f64::from(1u32 << attempt)
                    * rand::Rng::gen_range(&mut rand::thread_rng(), 0.5..1.5);
                tokio::time::sleep(Duration::from_millis(backoff as u64)).await;
            }
        }
    }
    report
}

async fn session(
    spec: &PhoneSpec,
    joined: &mpsc::UnboundedSender<(usize, Uuid)>,
    counters: &Counters,
    stop: &CancellationToken,
    report: &mut PhoneReport,
) -> anyhow::Result<()> {
    let socket = if spec.server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(spec.source, 0))?;
    let tcp = socket.connect(spec.server).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = if spec.up.is_zero() && spec.down.is_zero() {
        Box::new(tcp)
    } else {
        Box::new(netem::relay(tcp, spec.up, spec.down, spec.index as u64))
    };
    let url = format!("ws://{}/ws/scenes/{}", spec.server, spec.scene_id);
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(config)).await?;

    ws.send(Message::text(
        json!({"type": "hello", "protocol": 1}).to_string(),
    ))
    .await?;
    // (a crowd's join may be queued first: `queued` until `welcome`)
    let welcome = loop {
        let v = next_text(&mut ws).await?;
        if v["type"] != "queued" {
            break v;
        }
        report.queued = true;
    };
    let pixel_id: Uuid = welcome["pixel_id"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no welcome: {welcome}"))?
        .parse()?;
    report.connected = true;
    // joined when welcomed; its clock syncs while the others join
    let _ = joined.send((spec.index, pixel_id));

    // clock sync, as the web client does it: a few exchanges, trust the least delayed
    // (what arrives meanwhile is the catch-up and the first windows: read, not measured)
    let wait = tokio::time::sleep(spec.sync_delay);
    tokio::pin!(wait);
    loop {
        tokio::select! {
            () = &mut wait => break,
            msg = ws.next() => match msg {
                Some(Ok(Message::Close(f))) => anyhow::bail!("closed: {f:?}"),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("socket ended"),
            },
        }
    }
    let mut samples = Vec::with_capacity(spec.sync_samples);
    for _ in 0..spec.sync_samples.max(1) {
        let t0 = phone_now_ms(spec.clock_skew_ms);
        ws.send(Message::text(json!({"type": "sync", "t0": t0}).to_string()))
            .await?;
        let reply = loop {
            let v = next_text(&mut ws).await?;
            if v["type"] == "sync" {
                break v;
            }
        };
        let t3 = phone_now_ms(spec.clock_skew_ms);
        samples.push(SyncSample {
            t0,
            t1: reply["t1"].as_f64().unwrap_or_default() / 1000.0,
            t2: reply["t2"].as_f64().unwrap_or_default() / 1000.0,
            t3,
        });
        tokio::time::sleep(SYNC_SPACING).await;
    }
    let (offset, bound) = best_estimate(&samples).expect("samples");
    // truth: server = phone − skew
    let signed = offset - (-spec.clock_skew_ms);
    report.sync_err_ms = Some(signed.abs());
    report.sync_signed_err_ms = Some(signed);
    ws.send(Message::text(
        json!({"type": "sync_report", "offset_ms": offset, "error_ms": bound}).to_string(),
    ))
    .await?;

    let mut last_end: Option<i64> = None;
    loop {
        let msg = tokio::select! {
            _ = stop.cancelled() => break,
            msg = ws.next() => msg,
        };
        let Some(msg) = msg else {
            report.close = Some("dropped".into());
            counters.dropped.fetch_add(1, Ordering::Relaxed);
            break;
        };
        let msg = match msg {
            Ok(msg) => msg,
            Err(e) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                return Err(e.into());
            }
        };
        match msg {
            Message::Binary(bytes) => {
                let arrived = clock::now_ms();
                report.bytes += bytes.len() as u64;
                report.chunks += 1;
                counters
                    .bytes
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                counters.chunks.fetch_add(1, Ordering::Relaxed);
                let c = chunk::decode(&bytes)?;
                let end = c.start_ms + i64::from(c.length_ms);
                // A chunk that continues the stream is a regular window, due before its
                // start; one that overlaps it is a catch-up (join, move, new version), which
                // starts at the moment it was built.
                if last_end == Some(c.start_ms) {
                    report.stream_chunks += 1;
                    counters.stream_chunks.fetch_add(1, Ordering::Relaxed);
                    let lead = c.start_ms - arrived;
                    report.min_lead_ms = Some(report.min_lead_ms.map_or(lead, |m| m.min(lead)));
                    if lead < 0 {
                        report.late_chunks += 1;
                        counters.late_chunks.fetch_add(1, Ordering::Relaxed);
                    }
                } else {
                    report.catch_up_chunks += 1;
                }
                last_end = Some(end);
                if spec.record {
                    report.recorded.push(c);
                }
            }
            Message::Close(frame) => {
                report.close = Some(format!("{frame:?}"));
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                break;
            }
            _ => {}
        }
    }
    Ok(())
}

async fn next_text(ws: &mut WebSocketStream<Box<dyn Io>>) -> anyhow::Result<Value> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(t.as_str())?),
            Some(Ok(Message::Close(f))) => anyhow::bail!("closed: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => anyhow::bail!("socket ended"),
        }
    }
}
