//! Network emulation in user space (the kernel here has no netem): a relay between a phone
//! and the server that delays each direction on its own, with jitter, keeping TCP's order.
//! The load generator's phones use it in process ([`relay`]); `c3s-load relay` puts it on a
//! port in front of any server ([`serve`]), for the clock-sync bench and the browser tests,
//! and can stall it (nothing delivered either way for a while, as a Wi-Fi that drops out).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Delay of one direction: a fixed part and a uniformly random extra up to `jitter`.
#[derive(Debug, Clone, Copy)]
pub struct Leg {
    pub delay: Duration,
    pub jitter: Duration,
}

impl Leg {
    pub fn is_zero(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero()
    }

    /// This piece's delay.
    fn sample(&self, rng: &mut StdRng) -> Duration {
        if self.jitter.is_zero() {
            self.delay
        } else {
            self.delay + rng.gen_range(Duration::ZERO..self.jitter)
        }
    }
}

/// Bytes in flight in one direction, per connection; reads stop while it is full
/// (back-pressure).
const IN_FLIGHT_CHUNKS: usize = 64;
const READ_BYTES: usize = 8 * 1024;

/// Until when (µs after `Stall::epoch`) nothing is delivered, in either direction of any
/// connection of one relay.
#[derive(Debug)]
pub struct Stall {
    epoch: Instant,
    until_us: AtomicU64,
}

impl Stall {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            until_us: AtomicU64::new(0),
        })
    }

    /// Nothing is delivered for `length` from now (what was sent meanwhile comes after, in
    /// order).
    pub fn stall(&self, length: Duration) {
        let until = (Instant::now() + length - self.epoch).as_micros() as u64;
        self.until_us.fetch_max(until, Ordering::Relaxed);
    }

    fn until(&self) -> Instant {
        self.epoch + Duration::from_micros(self.until_us.load(Ordering::Relaxed))
    }
}

/// Returns the phone's end of a pipe whose other end is relayed to `server` with the given
/// delays: `down` for server → phone, `up` for phone → server; `seed` makes the jitter
/// reproducible.
pub fn relay(server: TcpStream, up: Leg, down: Leg, seed: u64) -> DuplexStream {
    let (phone_end, relay_end) = tokio::io::duplex(64 * 1024);
    let (relay_read, relay_write) = tokio::io::split(relay_end);
    let (server_read, server_write) = server.into_split();
    let stall = Stall::new();
    tokio::spawn(pump(
        relay_read,
        server_write,
        up,
        rng(seed, 0),
        stall.clone(),
    ));
    tokio::spawn(pump(server_read, relay_write, down, rng(seed, 1), stall));
    phone_end
}

fn rng(seed: u64, stream: u64) -> StdRng {
    StdRng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ stream)
}

/// Copies `from` to `to`, holding each piece for its leg's delay. A piece never overtakes the
/// one before it (release instants only grow), as on a real TCP connection; nothing is
/// released during a stall.
async fn pump(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    leg: Leg,
    mut rng: StdRng,
    stall: Arc<Stall>,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            // a stall that began while this piece waited holds it too
            loop {
                let until = stall.until();
                if until <= Instant::now() {
                    break;
                }
                tokio::time::sleep_until(until).await;
            }
            if to.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut last = Instant::now();
    let mut buf = vec![0u8; READ_BYTES];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let at = (Instant::now() + leg.sample(&mut rng)).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// `c3s-load relay`: listens on `listen`, relays every connection to `to` with the given legs
/// (connection `i`'s jitter seeded by `seed` and `i`), and prints `{"listen": "ADDR"}` once
/// it listens. Reads commands from standard input, one a line: `stall MS`. Ends when standard
/// input closes (the process that started it is gone) or after `lifetime`.
pub async fn serve(
    listen: SocketAddr,
    to: SocketAddr,
    up: Leg,
    down: Leg,
    seed: u64,
    lifetime: Duration,
) -> anyhow::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!(
        "{}",
        serde_json::json!({"listen": listener.local_addr()?.to_string()})
    );
    let stall = Stall::new();
    let accept = {
        let stall = stall.clone();
        async move {
            let mut index = 0u64;
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let stall = stall.clone();
                index += 1;
                let conn_seed = seed.wrapping_add(index);
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(to).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let upward = pump(
                        client_read,
                        server_write,
                        up,
                        rng(conn_seed, 0),
                        stall.clone(),
                    );
                    let downward = pump(server_read, client_write, down, rng(conn_seed, 1), stall);
                    tokio::join!(upward, downward);
                });
            }
        }
    };
    let commands = async move {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut words = line.split_whitespace();
            match (
                words.next(),
                words.next().and_then(|ms| ms.parse::<u64>().ok()),
            ) {
                (Some("stall"), Some(ms)) => {
                    stall.stall(Duration::from_millis(ms));
                    println!("{}", serde_json::json!({"stalled_ms": ms}));
                }
                _ => eprintln!("c3s-load relay: unknown command {line:?} (stall MS)"),
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = commands => {}
        _ = tokio::time::sleep(lifetime) => {}
    }
    Ok(())
}
