//! Network emulation in user space (the kernel here has no netem): a relay between a phone
//! and the server that delays each direction on its own, with jitter, keeping TCP's order.

use std::time::Duration;

use rand::Rng;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
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
}

/// Bytes in flight in one direction, per phone; reads stop while it is full (back-pressure).
const IN_FLIGHT_CHUNKS: usize = 64;
const READ_BYTES: usize = 8 * 1024;

/// Returns the phone's end of a pipe whose other end is relayed to `server` with the given
/// delays: `down` for server → phone, `up` for phone → server.
pub fn relay(server: TcpStream, up: Leg, down: Leg) -> DuplexStream {
    let (phone_end, relay_end) = tokio::io::duplex(64 * 1024);
    let (relay_read, relay_write) = tokio::io::split(relay_end);
    let (server_read, server_write) = server.into_split();
    tokio::spawn(pump(relay_read, server_write, up));
    tokio::spawn(pump(server_read, relay_write, down));
    phone_end
}

/// Copies `from` to `to`, holding each piece for its leg's delay. A piece never overtakes the
/// one before it (release instants only grow), as on a real TCP connection.
async fn pump(
    mut from: impl AsyncRead + Unpin + Send + 'static,
    mut to: impl AsyncWrite + Unpin + Send + 'static,
    leg: Leg,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(IN_FLIGHT_CHUNKS);
    let writer = tokio::spawn(async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
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
        let extra = if leg.jitter.is_zero() {
            Duration::ZERO
        } else {
            rand::thread_rng().gen_range(Duration::ZERO..leg.jitter)
        };
        let at = (Instant::now() + leg.delay + extra).max(last);
        last = at;
        if tx.send((at, buf[..n].to_vec())).await.is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}
