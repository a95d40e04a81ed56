//! What the nodes of one deployment tell each other (DESIGN.md, "Many nodes"). Nodes share
//! PostgreSQL and nothing else, so everything here goes through it:
//! - [`follow`]: what a node hears (`store::listen`): a scene's log moved (its follower
//!   catches up), or a phone signal came, or another node answered one; and a poll of the
//!   log's heads in case an announcement was lost;
//! - [`Signals`]: signals to single phones, delivered on every node, with each node's answer
//!   of how many phones it reached;
//! - [`report`]: each node's heartbeat and its phones' presence per scene, every
//!   `PRESENCE_EVERY`, so that any node can answer for the whole scene ([`presence`]).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::dataplane::follower::Follower;
use crate::dataplane::framecache::FrameCache;
use crate::dataplane::hub::Hub;
use crate::dataplane::presence::Presence;
use crate::dataplane::protocol::ServerMsg;
use crate::dataplane::signals::{self, Signal};
use crate::store::{self, listen::Heard, nodes::SIGNAL_ACK_CHANNEL, nodes::SIGNAL_CHANNEL};

/// How often a node compares its hubs with the log's heads, in case an announcement was lost.
const POLL_EVERY: Duration = Duration::from_millis(500);
/// How often a node reports its heartbeat and its phones per scene, and how old a report may
/// be and still count.
pub const PRESENCE_EVERY: Duration = Duration::from_secs(2);
pub const PRESENCE_FRESH: Duration = Duration::from_secs(10);
/// How long a signal's sender waits for the other nodes' answers. A node that does not
/// answer in time (it died since its last heartbeat) is not counted.
const SIGNAL_ANSWER_WAIT: Duration = Duration::from_secs(1);
/// ... and for a flash session, whose codes each node first stores for its phones (tens of
/// thousands of rows on a busy node).
const FLASH_ANSWER_WAIT: Duration = Duration::from_secs(5);
/// What a node may hear before the listener waits for it to catch up: bursts are small,
/// since appends to one scene are announced deduplicated.
pub const HEARD_CAPACITY: usize = 1024;

/// Follows what this node hears until `stop`: appends to the log are applied by the
/// follower (and wake the views), signals are delivered to this node's phones, answers go to
/// whoever waits for them. The log is also polled every `POLL_EVERY`; while PostgreSQL is
/// down the hubs keep what they have and phones keep playing.
pub async fn follow(
    follower: Arc<Follower>,
    signals: Arc<Signals>,
    mut heard: mpsc::Receiver<Heard>,
    views_wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut poll = tokio::time::interval(POLL_EVERY);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            got = heard.recv() => match got {
                Some(Heard::Appended(scenes)) => {
                    views_wake.notify_waiters();
                    for scene_id in scenes {
                        follower.catch_up(scene_id).await;
                    }
                }
                Some(Heard::Reconnected) => {
                    follower.catch_up_all().await;
                    views_wake.notify_waiters();
                }
                Some(Heard::Signal(payload)) => {
                    let signals = signals.clone();
                    tokio::spawn(async move { signals.receive(&payload).await });
                }
                Some(Heard::SignalAck(payload)) => signals.answered(&payload),
                None => return,
            },
            _ = poll.tick() => follower.catch_up_all().await,
            _ = stop.cancelled() => return,
        }
    }
}

/// A signal as it goes out to the other nodes.
#[derive(Debug, Serialize, Deserialize)]
struct Sent {
    request_id: Uuid,
    from: Uuid,
    scene_id: Uuid,
    signal: Signal,
}

/// A node's answer to a signal.
#[derive(Debug, Serialize, Deserialize)]
struct Answer {
    request_id: Uuid,
    node_id: Uuid,
    reached: usize,
}

/// Signals to single phones, on every node.
pub struct Signals {
    db: PgPool,
    hub: Arc<Hub>,
    node_id: Uuid,
    secret: Arc<[u8]>,
    /// Signals this node sent and waits for answers to.
    waiting: DashMap<Uuid, mpsc::Sender<Answer>>,
}

impl Signals {
    pub fn new(db: PgPool, hub: Arc<Hub>, node_id: Uuid, secret: Arc<[u8]>) -> Arc<Signals> {
        Arc::new(Signals {
            db,
            hub,
            node_id,
            secret,
            waiting: DashMap::new(),
        })
    }

    /// Delivers a signal to the scene's phones on this node (off the async threads: QR codes
    /// are rendered per phone); returns how many it reached.
    async fn deliver_here(&self, scene_id: Uuid, signal: Signal) -> usize {
        if let Signal::Flash {
            session_id,
            starts_at_us,
            symbol_us,
            unlocated_only,
        } = signal
        {
            return self
                .issue_flash(
                    scene_id,
                    session_id,
                    starts_at_us,
                    symbol_us,
                    unlocated_only,
                )
                .await;
        }
        if let Signal::Listen { .. } = signal {
            return self.tell_to_listen(scene_id, &signal).await;
        }
        let (hub, secret) = (self.hub.clone(), self.secret.clone());
        tokio::task::spawn_blocking(move || signals::deliver(&hub, scene_id, &signal, &secret))
            .await
            .unwrap_or(0)
    }

    /// Sends a signal to the scene's phones on every node; returns how many phones it reached
    /// (this node's, and those of every other node that answered within
    /// `SIGNAL_ANSWER_WAIT`).
    pub async fn send(&self, scene_id: Uuid, signal: Signal) -> Result<usize, sqlx::Error> {
        let others = match store::nodes::other_nodes(&self.db, self.node_id, PRESENCE_FRESH).await {
            Ok(others) => others,
            // no database: this node's phones still get it (an identify, a QR code); a
            // flash session, which needs the database, reaches nobody and says so
            Err(e) => {
                tracing::warn!(error = ?e, "signal to this node's phones only");
                return Ok(self.deliver_here(scene_id, signal).await);
            }
        };
        if others.is_empty() {
            return Ok(self.deliver_here(scene_id, signal).await);
        }
        let wait = match signal {
            Signal::Flash { .. } | Signal::Listen { .. } => FLASH_ANSWER_WAIT,
            _ => SIGNAL_ANSWER_WAIT,
        };
        // the others first, so every node works on it at once (a flash session's codes are
        // issued by each node for its own phones, before the session starts)
        let request_id = Uuid::new_v4();
        let (answers, mut answered) = mpsc::channel(others.len());
        self.waiting.insert(request_id, answers);
        let _forget = Forget(&self.waiting, request_id);
        let sent = Sent {
            request_id,
            from: self.node_id,
            scene_id,
            signal: signal.clone(),
        };
        let payload = serde_json::to_string(&sent).expect("signals serialise");
        let notified = store::nodes::notify(&self.db, SIGNAL_CHANNEL, &payload).await;
        let mut reached = self.deliver_here(scene_id, signal).await;
        notified?;
        let mut pending: HashSet<Uuid> = others.into_iter().collect();
        let deadline = tokio::time::Instant::now() + wait;
        while !pending.is_empty() {
            match tokio::time::timeout_at(deadline, answered.recv()).await {
                Ok(Some(answer)) => {
                    if pending.remove(&answer.node_id) {
                        reached += answer.reached;
                    }
                }
                _ => break,
            }
        }
        Ok(reached)
    }

    /// Issues a code word of a flash session to each of this node's phones of the scene
    /// (stored first: the clip is read against them), then tells each phone its own.
    async fn issue_flash(
        &self,
        scene_id: Uuid,
        session_id: Uuid,
        starts_at_us: i64,
        symbol_us: i64,
        unlocated_only: bool,
    ) -> usize {
        let conns = signals::phones(&self.hub, scene_id, unlocated_only);
        if conns.is_empty() {
            return 0;
        }
        let pixels: Vec<Uuid> = conns.iter().map(|c| c.pixel_id).collect();
        let codes: std::collections::HashMap<Uuid, u64> =
            match store::flash::issue_codes(&self.db, session_id, &pixels).await {
                Ok(codes) => codes.into_iter().collect(),
                Err(e) => {
                    tracing::warn!(%session_id, error = ?e, "flash codes not issued");
                    return 0;
                }
            };
        let reached = conns
            .iter()
            .filter(|conn| {
                codes.get(&conn.pixel_id).is_some_and(|&code| {
                    let msg = signals::flash_message(session_id, starts_at_us, symbol_us, code);
                    conn.offer_text(msg)
                })
            })
            .count();
        if let Err(e) = store::flash::add_phones(&self.db, session_id, reached).await {
            tracing::warn!(%session_id, error = ?e, "flash phones not counted");
        }
        reached
    }

    /// Tells this node's phones of the scene to listen in a sound session, once it has
    /// recorded whom it told (a report from anyone else is refused).
    async fn tell_to_listen(&self, scene_id: Uuid, signal: &Signal) -> usize {
        let Signal::Listen {
            session_id,
            starts_at_us,
            period_us,
            slot_us,
            repeats,
            slots,
            record_from_us,
            record_until_us,
            unlocated_only,
        } = signal
        else {
            return 0;
        };
        let conns = signals::phones(&self.hub, scene_id, *unlocated_only);
        if conns.is_empty() {
            return 0;
        }
        let pixels: Vec<Uuid> = conns.iter().map(|c| c.pixel_id).collect();
        if let Err(e) = store::sound::add_listeners(&self.db, *session_id, &pixels).await {
            tracing::warn!(%session_id, error = ?e, "phones not told to listen");
            return 0;
        }
        let msg = ServerMsg::Listen {
            session_id: *session_id,
            starts_at_us: *starts_at_us,
            period_us: *period_us,
            slot_us: *slot_us,
            repeats: *repeats,
            slots,
            record_from_us: *record_from_us,
            record_until_us: *record_until_us,
        }
        .to_json();
        conns
            .iter()
            .filter(|conn| conn.offer_text(msg.clone()))
            .count()
    }

    /// Another node's signal: delivered to this node's phones, and answered.
    async fn receive(&self, payload: &str) {
        let Ok(sent) = serde_json::from_str::<Sent>(payload) else {
            tracing::warn!(payload, "a signal this node does not understand");
            return;
        };
        if sent.from == self.node_id {
            return; // delivered already, before it was sent
        }
        let reached = self.deliver_here(sent.scene_id, sent.signal).await;
        let answer = Answer {
            request_id: sent.request_id,
            node_id: self.node_id,
            reached,
        };
        let payload = serde_json::to_string(&answer).expect("answers serialise");
        if let Err(e) = store::nodes::notify(&self.db, SIGNAL_ACK_CHANNEL, &payload).await {
            tracing::warn!(error = ?e, "could not answer a signal");
        }
    }

    /// A node answered a signal: handed to whoever waits for it (if this node sent it).
    fn answered(&self, payload: &str) {
        let Ok(answer) = serde_json::from_str::<Answer>(payload) else {
            return;
        };
        if let Some(waiting) = self.waiting.get(&answer.request_id) {
            let _ = waiting.try_send(answer);
        }
    }
}

/// Stops waiting for a signal's answers however `send` ends.
struct Forget<'a>(&'a DashMap<Uuid, mpsc::Sender<Answer>>, Uuid);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

/// Reports this node's heartbeat and its phones of every scene every `PRESENCE_EVERY` until
/// `stop`, and the hub's and frame cache's gauges with them.
pub async fn report(
    db: PgPool,
    node_id: Uuid,
    hub: Arc<Hub>,
    frames: Arc<FrameCache>,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(PRESENCE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = stop.cancelled() => return,
        }
        let mut scenes: Vec<(Uuid, Presence)> = Vec::new();
        for scene in hub.scenes() {
            let p = Presence::of(&scene);
            let id = scene.scene_id.to_string();
            metrics::gauge!("c3s_phones_connected", "scene" => id.clone()).set(p.connected as f64);
            metrics::gauge!("c3s_phones_located", "scene" => id).set(p.located as f64);
            if p.connected > 0 {
                scenes.push((scene.scene_id, p));
            }
        }
        metrics::gauge!("c3s_db_pool_connections", "state" => "open").set(f64::from(db.size()));
        metrics::gauge!("c3s_db_pool_connections", "state" => "idle").set(db.num_idle() as f64);
        let (hits, misses) = frames.hits_and_misses();
        metrics::counter!("c3s_frame_cache_hits_total").absolute(hits);
        metrics::counter!("c3s_frame_cache_misses_total").absolute(misses);
        metrics::gauge!("c3s_frame_cache_bytes").set(frames.used_bytes() as f64);
        metrics::gauge!("c3s_frame_cache_budget_bytes").set(frames.budget_bytes() as f64);
        metrics::gauge!("c3s_clip_decoders").set(frames.clips().running() as f64);
        if let Err(e) = store::nodes::heartbeat(&db, node_id).await {
            tracing::debug!(error = ?e, "heartbeat not written");
        }
        if let Err(e) = store::presence::report(&db, node_id, &scenes).await {
            tracing::debug!(error = ?e, "presence not reported");
        }
    }
}

/// The presence of a scene's phones on every node: this node's as it is now, the others' as
/// they last reported.
pub async fn presence(
    db: &PgPool,
    hub: &Hub,
    node_id: Uuid,
    scene_id: Uuid,
) -> Result<Presence, sqlx::Error> {
    let mut total = match hub.scene(scene_id) {
        Some(scene) if scene.conn_count() > 0 => Presence::of(&scene),
        _ => Presence::empty(),
    };
    for other in store::presence::others(db, node_id, scene_id, PRESENCE_FRESH).await? {
        total.add(&other);
    }
    Ok(total)
}

/// How long a scene's presence is reused by the pages watching it: one count of the scene per
/// second, however many pages watch it.
const PRESENCE_REUSE: Duration = Duration::from_secs(1);

/// The last presence counted per scene, shared by the streams watching it.
#[derive(Default)]
pub struct PresenceCache {
    counted: DashMap<Uuid, (std::time::Instant, Presence)>,
}

impl PresenceCache {
    /// The scene's presence, counted at most once per `PRESENCE_REUSE`.
    pub async fn get(
        &self,
        db: &PgPool,
        hub: &Hub,
        node_id: Uuid,
        scene_id: Uuid,
    ) -> Result<Presence, sqlx::Error> {
        if let Some(entry) = self.counted.get(&scene_id) {
            if entry.0.elapsed() < PRESENCE_REUSE {
                return Ok(entry.1.clone());
            }
        }
        let p = presence(db, hub, node_id, scene_id).await?;
        self.counted
            .insert(scene_id, (std::time::Instant::now(), p.clone()));
        // scenes nobody watched for a while are forgotten
        if self.counted.len() > 1024 {
            self.counted
                .retain(|_, (at, _)| at.elapsed() < PRESENCE_REUSE * 60);
        }
        Ok(p)
    }
}
