//! The in-memory data plane of one node: for each scene, its connected phones and the
//! snapshot (scene, show, timeline) their colours are computed from.
//!
//! Invariants: no lock here is held across an `.await` (they are std locks, and the scheduler
//! runs on its own thread); every per-connection queue is bounded, and a phone whose chunk
//! queue is full is told why and dropped, never waited for. Control messages (JSON text: the
//! scene's fields, where the phone stands, QR and flash codes) do not use that queue: each
//! phone keeps the newest of each kind until its socket takes it, so a burst of scene edits
//! or QR requests replaces what is waiting instead of dropping the crowd; only colour chunks
//! can make a phone lagging. Each scene also announces what changed in
//! it ([`Change`]) to whoever watches it (the operator's and observer's pages), on a bounded
//! broadcast that never waits for a slow watcher.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use dashmap::DashMap;
use tokio::sync::{broadcast, Notify};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::grid::Grid;
use super::protocol::CloseReason;
use crate::events::Located;
use crate::playback::{Show, Timeline};
use crate::scene::Scene;

/// Messages waiting for one phone's socket. Chunks are a few hundred bytes; eight of them is
/// four seconds of show right after a new version (a tick's window each) and 32 s once it has
/// settled (4 s windows), more than any live phone falls behind; a phone whose socket stops
/// taking them is closed by the send timeout first.
pub const CONN_QUEUE_CAPACITY: usize = 8;

/// What goes out to a phone through its queue: a binary colour chunk (`crate::chunk`), often
/// shared by many phones.
pub type Outgoing = Bytes;

/// One phone's bounded queue of colour chunks: the scheduler's thread offers without waiting,
/// the phone's session takes them in order. A lock and a wake-up rather than a tokio channel:
/// the channel's first block is 32 slots (~1.3 KB a phone with its padding), this is ~0.3 KB
/// (at 100 000 phones that is a tenth of the memory per phone).
struct ChunkQueue {
    state: std::sync::Mutex<ChunkState>,
    ready: Notify,
}

struct ChunkState {
    chunks: VecDeque<Outgoing>,
    capacity: usize,
    /// The session dropped its end: offers are refused.
    receiver_gone: bool,
    /// The connection was dropped: the session is told when the queue runs dry.
    sender_gone: bool,
}

enum Offered {
    Queued,
    Full,
    Closed,
}

impl ChunkQueue {
    fn new(capacity: usize) -> ChunkQueue {
        ChunkQueue {
            state: std::sync::Mutex::new(ChunkState {
                chunks: VecDeque::new(),
                capacity: capacity.max(1),
                receiver_gone: false,
                sender_gone: false,
            }),
            ready: Notify::new(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ChunkState> {
        // a panic while the lock was held cannot leave the queue half-changed (every change
        // is one push or pop), so a poisoned lock is taken as it is
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn offer(&self, chunk: Outgoing) -> Offered {
        {
            let mut state = self.state();
            if state.receiver_gone {
                return Offered::Closed;
            }
            if state.chunks.len() >= state.capacity {
                return Offered::Full;
            }
            state.chunks.push_back(chunk);
        }
        self.ready.notify_one();
        Offered::Queued
    }
}

/// The session's end of a phone's chunk queue (from [`Hub::connect`]).
pub struct ChunkReceiver(Arc<ChunkQueue>);

impl ChunkReceiver {
    /// The next chunk, waiting for one; `None` once the connection is gone and the queue is
    /// empty. Cancel-safe: a chunk is taken only by a call that returns it.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        loop {
            {
                let mut state = self.0.state();
                if let Some(chunk) = state.chunks.pop_front() {
                    return Some(chunk);
                }
                if state.sender_gone {
                    return None;
                }
            }
            // a wake-up given while nobody waited is kept, so a chunk offered between the
            // check above and this wait is not missed
            self.0.ready.notified().await;
        }
    }

    /// The next chunk if one is waiting.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.0.state().chunks.pop_front()
    }
}

impl Drop for ChunkReceiver {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.receiver_gone = true;
        state.chunks.clear();
    }
}

/// Kinds of control message a phone may have waiting at once (there are fewer kinds than
/// this; the bound only guards against a new kind being sent in a loop).
const MAX_CONTROL_WAITING: usize = 16;

/// Position packed into one atomic: two f32 bit patterns; NaN means unlocated.
const UNLOCATED: u64 = u64::MAX;

fn pack(x: f32, y: f32) -> u64 {
    (u64::from(x.to_bits()) << 32) | u64::from(y.to_bits())
}

/// One connected phone.
pub struct Conn {
    pub id: u64,
    pub pixel_id: Uuid,
    chunks: Arc<ChunkQueue>,
    position: AtomicU64,
    close: CancellationToken,
    close_reason: AtomicU8,
    /// Last reported clock-sync error bound, in µs (`u32::MAX` before the first report).
    sync_error_us: AtomicU32,
    /// Set when the phone must get a catch-up chunk (it joined, or was located or moved); its
    /// id is then in its scene's list of catch-ups, so the scheduler finds the few phones
    /// that need one without looking at every phone each tick.
    catch_up: AtomicBool,
    catch_ups: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Control messages not sent yet, the newest of each kind, oldest kind first.
    control: std::sync::Mutex<Vec<String>>,
    /// Wakes the session when `control` gains a message.
    control_ready: tokio::sync::Notify,
}

impl Conn {
    pub fn position(&self) -> Option<(f32, f32)> {
        let p = self.position.load(Ordering::Relaxed);
        (p != UNLOCATED).then(|| (f32::from_bits((p >> 32) as u32), f32::from_bits(p as u32)))
    }

    /// Moves the phone; it gets a catch-up chunk for its new place on the next wake-up.
    pub fn set_position(&self, position: Option<(f32, f32)>) {
        let v = position.map_or(UNLOCATED, |(x, y)| pack(x, y));
        self.position.store(v, Ordering::Relaxed);
        self.request_catch_up();
    }

    pub fn request_catch_up(&self) {
        if !self.catch_up.swap(true, Ordering::AcqRel) {
            self.catch_ups.lock().expect("catch-ups lock").push(self.id);
        }
    }

    pub fn take_catch_up(&self) -> bool {
        self.catch_up.swap(false, Ordering::AcqRel)
    }

    pub fn report_sync(&self, error_ms: f64) {
        let us = (error_ms.abs() * 1000.0).min(f64::from(u32::MAX - 1)) as u32;
        self.sync_error_us.store(us, Ordering::Relaxed);
    }

    pub fn sync_error_ms(&self) -> Option<f64> {
        let us = self.sync_error_us.load(Ordering::Relaxed);
        (us != u32::MAX).then(|| f64::from(us) / 1000.0)
    }

    /// Leaves a control message (JSON of a `ServerMsg`) for the phone: it replaces a waiting
    /// message of the same kind, never waits, and never drops the phone.
    pub fn offer_text(&self, text: String) -> bool {
        if self.close.is_cancelled() {
            return false;
        }
        {
            let mut waiting = self.control.lock().expect("control lock");
            let kind = super::protocol::kind_of(&text);
            if let Some(old) = waiting
                .iter_mut()
                .find(|t| super::protocol::kind_of(t) == kind)
            {
                *old = text;
                metrics::counter!("c3s_control_coalesced_total").increment(1);
            } else {
                if waiting.len() >= MAX_CONTROL_WAITING {
                    waiting.remove(0);
                }
                waiting.push(text);
            }
        }
        self.control_ready.notify_one();
        true
    }

    /// Waits until a control message is waiting (at once if one is).
    pub async fn control_ready(&self) {
        self.control_ready.notified().await
    }

    /// The control messages waiting, oldest kind first; none are left.
    pub fn take_control(&self) -> Vec<String> {
        std::mem::take(&mut *self.control.lock().expect("control lock"))
    }

    /// Queues a colour chunk without waiting; a full queue drops the phone as lagging.
    pub fn offer(&self, msg: Outgoing) -> bool {
        match self.chunks.offer(msg) {
            Offered::Queued => true,
            Offered::Full => {
                metrics::counter!("c3s_queue_drops_total").increment(1);
                self.close_with(CloseReason::Lagging);
                false
            }
            Offered::Closed => false,
        }
    }

    /// Asks the connection's task to close the socket with `reason`.
    pub fn close_with(&self, reason: CloseReason) {
        let _ = self.close_reason.compare_exchange(
            CloseReason::None as u8,
            reason as u8,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        self.close.cancel();
    }

    pub fn closing(&self) -> &CancellationToken {
        &self.close
    }

    pub fn close_reason(&self) -> CloseReason {
        CloseReason::from_u8(self.close_reason.load(Ordering::Relaxed))
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.chunks.state().sender_gone = true;
        self.chunks.ready.notify_one();
    }
}

/// What changed in a scene, for its watchers. Phones hear of these through their own messages.
#[derive(Debug, Clone)]
pub enum Change {
    /// A phone was placed (or moved).
    Located(Located),
    Kicked {
        pixel_id: Uuid,
    },
    /// A new show version: built, or a playback command.
    Show {
        show: Arc<Show>,
        timeline: Timeline,
    },
    /// Its fields or status changed.
    Scene(Box<Scene>),
    /// Ended or deleted.
    Ended,
}

/// Changes a scene's watchers may fall behind by before they are told to read everything
/// again: a photo that places a thousand phones at once is a thousand changes.
pub const CHANGES_CAPACITY: usize = 4096;

/// What a scene's colours are computed from. Replaced whole, never edited in place.
#[derive(Debug, Clone)]
pub struct SceneSnapshot {
    pub width: f32,
    pub height: f32,
    pub idle_rgb: [u8; 3],
    pub show: Option<Arc<Show>>,
    pub grid: Grid,
    pub timeline: Timeline,
}

impl SceneSnapshot {
    /// A scene of `width` × `height` with no show: every phone shows `idle_rgb`.
    pub fn idle(width: f32, height: f32, idle_rgb: [u8; 3]) -> SceneSnapshot {
        SceneSnapshot {
            width,
            height,
            idle_rgb,
            show: None,
            grid: Grid { w: 1, h: 1 },
            timeline: Timeline::NEW,
        }
    }
}

/// A scene's connections: dense lists, one per window group (the scheduler walks a group's
/// list when its window is due, and splits a long one across threads), with indexes by
/// connection id and by pixel. Phones are dealt to the groups in turn as they join, so the
/// groups of every scene stay even.
struct Conns {
    groups: Vec<Vec<Arc<Conn>>>,
    /// Group and position of each connection.
    index: HashMap<u64, (usize, usize)>,
    /// The live connection of each pixel (a replaced one stays listed until it ends).
    by_pixel: HashMap<Uuid, u64>,
    len: usize,
    /// Phones dealt so far (the next one goes to group `dealt % groups`).
    dealt: usize,
}

impl Conns {
    fn new(groups: usize) -> Conns {
        Conns {
            groups: vec![Vec::new(); groups.max(1)],
            index: HashMap::new(),
            by_pixel: HashMap::new(),
            len: 0,
            dealt: 0,
        }
    }

    fn get(&self, id: u64) -> Option<&Arc<Conn>> {
        self.index.get(&id).map(|&(g, i)| &self.groups[g][i])
    }

    fn insert(&mut self, conn: Arc<Conn>) {
        let g = self.dealt % self.groups.len();
        self.dealt = self.dealt.wrapping_add(1);
        self.index.insert(conn.id, (g, self.groups[g].len()));
        self.groups[g].push(conn);
        self.len += 1;
    }

    fn remove(&mut self, id: u64) -> Option<Arc<Conn>> {
        let (g, i) = self.index.remove(&id)?;
        let list = &mut self.groups[g];
        let conn = list.swap_remove(i);
        if let Some(moved) = list.get(i) {
            self.index.insert(moved.id, (g, i));
        }
        self.len -= 1;
        Some(conn)
    }
}

/// One scene on this node.
pub struct SceneHub {
    pub scene_id: Uuid,
    conns: RwLock<Conns>,
    snapshot: RwLock<Arc<SceneSnapshot>>,
    /// Set when the snapshot changed in a way phones must hear about at once (a new show
    /// version): the scheduler sends every phone a catch-up chunk and clears it.
    pub needs_catch_up: AtomicBool,
    /// Phones that asked for a catch-up since the scheduler last looked (see `Conn`).
    catch_ups: Arc<std::sync::Mutex<Vec<u64>>>,
    /// Set once the scene has ended (or was deleted).
    ended: AtomicBool,
    /// The last event of the scene's log applied here (`seq`); see `live::catch_up`.
    applied_seq: AtomicI64,
    /// Held while events are applied, so they are applied once each and in order.
    pub applying: tokio::sync::Mutex<()>,
    /// What changed, for the scene's watchers (see [`Change`]).
    changes: broadcast::Sender<Change>,
    /// Since when the scene has had no phone here (none: it has phones).
    empty_since: std::sync::Mutex<Option<std::time::Instant>>,
}

impl SceneHub {
    pub fn snapshot(&self) -> Arc<SceneSnapshot> {
        self.snapshot.read().expect("snapshot lock").clone()
    }

    /// Installs a snapshot unless one of a newer show version is already in: two commands'
    /// publications may finish in either order, and phones must never go back a version.
    pub fn set_snapshot(&self, snapshot: SceneSnapshot) -> bool {
        let mut current = self.snapshot.write().expect("snapshot lock");
        if snapshot.timeline.version < current.timeline.version {
            return false;
        }
        *current = Arc::new(snapshot);
        drop(current);
        self.needs_catch_up.store(true, Ordering::Release);
        true
    }

    /// Marks the scene ended: phones joining from now on are turned away.
    pub fn end(&self) {
        self.ended.store(true, Ordering::Release);
    }

    pub fn is_ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    pub fn applied_seq(&self) -> i64 {
        self.applied_seq.load(Ordering::Acquire)
    }

    /// Records that the log has been applied up to `seq` (hold `applying`).
    pub fn set_applied_seq(&self, seq: i64) {
        self.applied_seq.store(seq, Ordering::Release);
    }

    /// Calls `f` with every connection, under a read lock (do not block in `f`).
    pub fn for_each_conn(&self, mut f: impl FnMut(&Arc<Conn>)) {
        for conn in self
            .conns
            .read()
            .expect("conns lock")
            .groups
            .iter()
            .flatten()
        {
            f(conn);
        }
    }

    /// Calls `f` with every connection of each group in turn (the group's number first),
    /// under a read lock (do not block in `f`).
    pub fn for_each_conn_by_group(&self, mut f: impl FnMut(usize, &Arc<Conn>)) {
        for (g, list) in self
            .conns
            .read()
            .expect("conns lock")
            .groups
            .iter()
            .enumerate()
        {
            for conn in list {
                f(g, conn);
            }
        }
    }

    /// Calls `f` with one window group's connections as one slice, under a read lock (do not
    /// block in `f`).
    pub fn with_group<R>(&self, group: usize, f: impl FnOnce(&[Arc<Conn>]) -> R) -> R {
        let conns = self.conns.read().expect("conns lock");
        f(conns.groups.get(group).map_or(&[], Vec::as_slice))
    }

    /// Calls `f` with each phone that asked for a catch-up since the last call (and is still
    /// here), its group first, clearing its request.
    pub fn take_catch_ups(&self, mut f: impl FnMut(usize, &Arc<Conn>)) {
        let ids = std::mem::take(&mut *self.catch_ups.lock().expect("catch-ups lock"));
        let conns = self.conns.read().expect("conns lock");
        for id in ids {
            if let Some(&(g, i)) = conns.index.get(&id) {
                let conn = &conns.groups[g][i];
                if conn.take_catch_up() {
                    f(g, conn);
                }
            }
        }
    }

    /// Forgets every phone's catch-up request (all of them get one anyway).
    pub fn clear_catch_ups(&self) {
        let ids = std::mem::take(&mut *self.catch_ups.lock().expect("catch-ups lock"));
        let conns = self.conns.read().expect("conns lock");
        for id in ids {
            if let Some(conn) = conns.get(id) {
                conn.take_catch_up();
            }
        }
    }

    /// How many window groups the scene's phones are spread over (see [`Hub::new`]).
    pub fn groups(&self) -> usize {
        self.conns.read().expect("conns lock").groups.len()
    }

    /// Tells the scene's watchers of a change (none watching: nothing to do).
    pub fn announce(&self, change: Change) {
        let _ = self.changes.send(change);
    }

    /// Starts watching the scene's changes from now on.
    pub fn watch(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    pub fn conn_count(&self) -> usize {
        self.conns.read().expect("conns lock").len
    }

    /// The live connection of a pixel, if it has one here.
    pub fn conn_of_pixel(&self, pixel_id: Uuid) -> Option<Arc<Conn>> {
        let conns = self.conns.read().expect("conns lock");
        let id = conns.by_pixel.get(&pixel_id)?;
        conns.get(*id).cloned()
    }
}

/// Every scene with phones on this node.
pub struct Hub {
    scenes: DashMap<Uuid, Arc<SceneHub>>,
    next_conn_id: AtomicU64,
    /// Window groups of each scene (see [`Hub::new`]).
    groups: usize,
}

impl Default for Hub {
    /// One window group: every phone's window is due at once.
    fn default() -> Self {
        Hub::new(1)
    }
}

impl Hub {
    /// A hub whose scenes spread their phones over `groups` window groups: the scheduler
    /// sends each group its window on a different tick, so a tick serves a share of the
    /// crowd and every phone still gets a long window.
    pub fn new(groups: usize) -> Hub {
        Hub {
            scenes: DashMap::new(),
            next_conn_id: AtomicU64::new(1),
            groups: groups.max(1),
        }
    }

    pub fn scene(&self, scene_id: Uuid) -> Option<Arc<SceneHub>> {
        self.scenes.get(&scene_id).map(|s| s.value().clone())
    }

    /// The scene's hub, created with `snapshot` (the log applied up to `seq`) when it has
    /// none yet.
    pub fn scene_or_insert(
        &self,
        scene_id: Uuid,
        snapshot: impl FnOnce() -> (SceneSnapshot, i64),
    ) -> Arc<SceneHub> {
        self.scenes
            .entry(scene_id)
            .or_insert_with(|| {
                let (snapshot, seq) = snapshot();
                Arc::new(SceneHub {
                    scene_id,
                    conns: RwLock::new(Conns::new(self.groups)),
                    snapshot: RwLock::new(Arc::new(snapshot)),
                    needs_catch_up: AtomicBool::new(false),
                    catch_ups: Arc::default(),
                    ended: AtomicBool::new(false),
                    applied_seq: AtomicI64::new(seq),
                    applying: tokio::sync::Mutex::new(()),
                    changes: broadcast::channel(CHANGES_CAPACITY).0,
                    empty_since: std::sync::Mutex::new(Some(std::time::Instant::now())),
                })
            })
            .value()
            .clone()
    }

    /// Scenes, cloned out so no map guard outlives the call.
    pub fn scenes(&self) -> Vec<Arc<SceneHub>> {
        self.scenes.iter().map(|e| e.value().clone()).collect()
    }

    /// Registers a phone; returns its connection and the receiving end of its queue. A phone
    /// already connected with the same pixel is closed ("replaced"): one socket per pixel.
    pub fn connect(
        &self,
        scene: &SceneHub,
        pixel_id: Uuid,
        position: Option<(f32, f32)>,
        queue_capacity: usize,
    ) -> (Arc<Conn>, ChunkReceiver) {
        let chunks = Arc::new(ChunkQueue::new(queue_capacity));
        let rx = ChunkReceiver(chunks.clone());
        let conn = Arc::new(Conn {
            id: self.next_conn_id.fetch_add(1, Ordering::Relaxed),
            pixel_id,
            chunks,
            position: AtomicU64::new(UNLOCATED),
            close: CancellationToken::new(),
            close_reason: AtomicU8::new(CloseReason::None as u8),
            sync_error_us: AtomicU32::new(u32::MAX),
            catch_up: AtomicBool::new(false),
            catch_ups: scene.catch_ups.clone(),
            control: std::sync::Mutex::new(Vec::new()),
            control_ready: tokio::sync::Notify::new(),
        });
        if let Some((x, y)) = position {
            conn.position.store(pack(x, y), Ordering::Relaxed);
        }
        let mut conns = scene.conns.write().expect("conns lock");
        if let Some(old) = conns
            .by_pixel
            .insert(pixel_id, conn.id)
            .and_then(|id| conns.get(id))
        {
            old.close_with(CloseReason::Replaced);
        }
        conns.insert(conn.clone());
        drop(conns);
        // listed first, so the scheduler finds it: the new phone's catch-up
        conn.request_catch_up();
        *scene.empty_since.lock().expect("empty_since lock") = None;
        (conn, rx)
    }

    pub fn disconnect(&self, scene: &SceneHub, conn_id: u64) {
        let mut conns = scene.conns.write().expect("conns lock");
        if let Some(conn) = conns.remove(conn_id) {
            if conns.by_pixel.get(&conn.pixel_id) == Some(&conn_id) {
                conns.by_pixel.remove(&conn.pixel_id);
            }
        }
        if conns.len == 0 {
            *scene.empty_since.lock().expect("empty_since lock") = Some(std::time::Instant::now());
        }
    }

    /// Forgets the scenes that have had no phone for `idle` and that nobody holds (no phone
    /// joining, no page watching, no task using it): a node that served many scenes does not
    /// keep them all. A scene asked for again is loaded afresh from its log. Returns how many
    /// were freed.
    pub fn free_idle(&self, idle: std::time::Duration) -> usize {
        let before = self.scenes.len();
        // under the map's write lock: nobody can clone a hub out while it is checked
        self.scenes.retain(|_, hub| {
            let unused = Arc::strong_count(hub) == 1 && hub.conn_count() == 0;
            let empty_since = *hub.empty_since.lock().expect("empty_since lock");
            !(unused && empty_since.is_some_and(|t| t.elapsed() >= idle))
        });
        before - self.scenes.len()
    }

    /// The live connection of one pixel in a scene on this node.
    pub fn conn_of_pixel(&self, scene_id: Uuid, pixel_id: Uuid) -> Option<Arc<Conn>> {
        self.scene(scene_id)?.conn_of_pixel(pixel_id)
    }

    /// Closes every phone of a scene with `reason`.
    pub fn close_scene(&self, scene_id: Uuid, reason: CloseReason) {
        if let Some(scene) = self.scene(scene_id) {
            if reason == CloseReason::SceneEnded {
                scene.end();
            }
            scene.for_each_conn(|c| c.close_with(reason));
        }
    }

    /// Closes every phone of every scene with `reason` (the node is shutting down).
    pub fn close_all(&self, reason: CloseReason) {
        for scene in self.scenes() {
            scene.for_each_conn(|c| c.close_with(reason));
        }
    }

    pub fn connection_count(&self) -> usize {
        self.scenes.iter().map(|s| s.value().conn_count()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> (SceneSnapshot, i64) {
        (SceneSnapshot::idle(10.0, 10.0, [0, 0, 0]), 0)
    }

    #[test]
    fn a_full_queue_drops_only_that_phone() {
        let hub = Hub::default();
        let scene = hub.scene_or_insert(Uuid::new_v4(), snapshot);
        let (slow, _slow_rx) = hub.connect(&scene, Uuid::new_v4(), None, 2);
        let (fast, mut fast_rx) = hub.connect(&scene, Uuid::new_v4(), None, 2);
        for i in 0..3 {
            slow.offer(Bytes::from(vec![i]));
            fast.offer(Bytes::from(vec![i]));
            while fast_rx.try_recv().is_some() {}
        }
        assert!(slow.closing().is_cancelled());
        assert_eq!(slow.close_reason(), CloseReason::Lagging);
        assert!(!fast.closing().is_cancelled());
    }

    #[test]
    fn idle_scenes_nobody_holds_are_freed() {
        let hub = Hub::default();
        let (busy, idle, held) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let scene = hub.scene_or_insert(busy, snapshot);
        let (_conn, _rx) = hub.connect(&scene, Uuid::new_v4(), None, 2);
        drop(scene);
        hub.scene_or_insert(idle, snapshot);
        let holder = hub.scene_or_insert(held, snapshot);
        assert_eq!(
            hub.free_idle(std::time::Duration::from_secs(60)),
            0,
            "not idle long enough"
        );
        assert_eq!(hub.free_idle(std::time::Duration::ZERO), 1);
        assert!(hub.scene(idle).is_none());
        assert!(hub.scene(busy).is_some(), "a scene with a phone stays");
        assert!(hub.scene(held).is_some(), "a scene somebody holds stays");
        drop(holder);
        assert_eq!(hub.free_idle(std::time::Duration::ZERO), 1);
    }

    #[test]
    fn control_messages_coalesce_by_kind_and_never_drop_the_phone() {
        let hub = Hub::default();
        let scene = hub.scene_or_insert(Uuid::new_v4(), snapshot);
        let (conn, _rx) = hub.connect(&scene, Uuid::new_v4(), None, 2);
        for i in 0..1000 {
            assert!(conn.offer_text(format!(r#"{{"type":"scene","n":{i}}}"#)));
            assert!(conn.offer_text(format!(r#"{{"type":"located","x":{i},"y":0}}"#)));
        }
        conn.offer_text(r#"{"type":"qr","code":"A"}"#.into());
        assert!(
            !conn.closing().is_cancelled(),
            "a burst of control text is not lagging"
        );
        assert_eq!(
            conn.take_control(),
            [
                r#"{"type":"scene","n":999}"#,
                r#"{"type":"located","x":999,"y":0}"#,
                r#"{"type":"qr","code":"A"}"#
            ]
        );
        assert!(conn.take_control().is_empty());
    }

    #[test]
    fn reconnecting_replaces_the_old_socket_and_positions_pack() {
        let hub = Hub::default();
        let scene = hub.scene_or_insert(Uuid::new_v4(), snapshot);
        let pixel = Uuid::new_v4();
        let (first, _rx1) = hub.connect(&scene, pixel, Some((1.5, -2.25)), 4);
        assert_eq!(first.position(), Some((1.5, -2.25)));
        let (second, _rx2) = hub.connect(&scene, pixel, None, 4);
        assert_eq!(first.close_reason(), CloseReason::Replaced);
        assert!(second.position().is_none());
        assert_eq!(scene.conn_count(), 2);
        hub.disconnect(&scene, first.id);
        assert_eq!(
            hub.conn_of_pixel(scene.scene_id, pixel).unwrap().id,
            second.id
        );
        hub.disconnect(&scene, second.id);
        assert!(hub.conn_of_pixel(scene.scene_id, pixel).is_none());
    }

    #[test]
    fn phones_spread_over_window_groups_and_leave_them_cleanly() {
        let hub = Hub::new(3);
        let scene = hub.scene_or_insert(Uuid::new_v4(), snapshot);
        assert_eq!(scene.groups(), 3);
        let conns: Vec<_> = (0..10)
            .map(|_| hub.connect(&scene, Uuid::new_v4(), None, 2))
            .collect();
        for (conn, _) in conns.iter().step_by(3) {
            hub.disconnect(&scene, conn.id);
        }
        let mut seen = Vec::new();
        scene.for_each_conn_by_group(|g, c| {
            assert!(g < 3);
            seen.push(c.id);
        });
        assert_eq!(seen.len(), 6);
        assert_eq!(scene.conn_count(), 6);
        for (conn, _) in &conns {
            let listed = seen.contains(&conn.id);
            assert_eq!(
                hub.conn_of_pixel(scene.scene_id, conn.pixel_id).is_some(),
                listed
            );
        }
        let sizes: Vec<usize> = (0..3).map(|g| scene.with_group(g, <[_]>::len)).collect();
        // dealt in turn: 0, 1, 2, 0, ...; the 1st, 4th, 7th and 10th left, all of group 0
        assert_eq!(sizes, [0, 3, 3]);
    }
}
