//! Listening to the other nodes: one connection `LISTEN`s on the log's channel and the phone
//! signal channels, and hands what it hears to `nodes` as [`Heard`]. A lost connection is made
//! again; whoever reads [`Heard::Reconnected`] knows that announcements may have been missed.

use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::nodes::{SCENE_EVENT_CHANNEL, SIGNAL_ACK_CHANNEL, SIGNAL_CHANNEL};

/// What a node hears.
#[derive(Debug)]
pub enum Heard {
    /// Events were appended to these scenes' logs (a burst is one of these, deduplicated).
    Appended(Vec<Uuid>),
    /// Listening (again): anything announced meanwhile was missed.
    Reconnected,
    /// A phone signal (JSON, see `nodes`).
    Signal(String),
    /// A node's answer to a signal (JSON, see `nodes`).
    SignalAck(String),
}

/// How long to wait before listening again when the database is down.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// Listens until `stop`, sending what it hears to `out`.
pub async fn run(pool: PgPool, out: mpsc::Sender<Heard>, stop: CancellationToken) {
    loop {
        let mut listener = match listen(&pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = ?e, "cannot listen to the other nodes yet");
                tokio::select! {
                    _ = tokio::time::sleep(RETRY_EVERY) => continue,
                    _ = stop.cancelled() => return,
                }
            }
        };
        if out.send(Heard::Reconnected).await.is_err() {
            return;
        }
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = stop.cancelled() => return,
            };
            let notification = match received {
                Ok(Some(n)) => n,
                // the connection dropped and was made again: notifications may be lost
                Ok(None) => {
                    if out.send(Heard::Reconnected).await.is_err() {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = ?e, "lost the other nodes' notifications; listening again");
                    break;
                }
            };
            // a burst (a crowd entering seats) is one catch-up per scene, not one per append
            let mut scenes = Vec::new();
            let mut others = Vec::new();
            for n in
                std::iter::once(notification).chain(std::iter::from_fn(|| listener.next_buffered()))
            {
                match n.channel() {
                    SCENE_EVENT_CHANNEL => scenes.extend(appended_scene(n.payload())),
                    SIGNAL_CHANNEL => others.push(Heard::Signal(n.payload().to_owned())),
                    SIGNAL_ACK_CHANNEL => others.push(Heard::SignalAck(n.payload().to_owned())),
                    _ => {}
                }
            }
            if !scenes.is_empty() {
                scenes.sort_unstable();
                scenes.dedup();
                others.insert(0, Heard::Appended(scenes));
            }
            for heard in others {
                if out.send(heard).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn listen(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener
        .listen_all([SCENE_EVENT_CHANNEL, SIGNAL_CHANNEL, SIGNAL_ACK_CHANNEL])
        .await?;
    Ok(listener)
}

/// The scene of an append's announcement (`{"scene_id": ..., "seq": ...}`).
fn appended_scene(payload: &str) -> Option<Uuid> {
    #[derive(serde::Deserialize)]
    struct Payload {
        scene_id: Uuid,
    }
    serde_json::from_str::<Payload>(payload)
        .ok()
        .map(|p| p.scene_id)
}
