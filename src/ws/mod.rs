//! The phones' WebSocket: `GET /ws/scenes/{scene_id}`. One task per phone runs the session:
//! hello → join → welcome, then clock sync, colour chunks from the hub queue, heartbeats, and
//! a close frame with a reason for every way it can end (docs/protocol.md).

use std::time::Duration;

use axum::extract::rejection::PathRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use tokio::time::{interval, timeout, Instant, MissedTickBehavior};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::app::AppState;
use crate::auth;
use crate::budget::Bucket;
use crate::clock;
use crate::commands::placements::{PlaceError, Placement, Refused};
use crate::dataplane::hub::{Conn, SceneHub};
use crate::dataplane::protocol::{
    close, ClientMsg, CloseReason, Position, ScenePublic, ServerMsg, PROTOCOL_VERSION,
};
use crate::dataplane::signals::qr_message;
use crate::error::Error;
use crate::http::extract::ClientIp;
use crate::locate::gps::GeoReference;
use crate::locate::seat::normalise;
use crate::locate::Observation;
use crate::scene::{LocationMethod, PixelStatus, Scene, SceneStatus};
use crate::store::{self, joins::Answer, joins::Ask};
use joins::Unavailable;

pub mod joins;
pub mod sound;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(scene_socket))
        .routes(routes!(clock_socket))
}

/// Largest message a phone may send; its messages are tiny JSON.
const MAX_CLIENT_MESSAGE_BYTES: usize = 4096;
/// What the socket itself reads of one message before it fails: well past the protocol's
/// limit, so a message a little too big is read whole and refused by the session (1009 with
/// its close frame delivered), and the socket stays readable to drain; only a gross one
/// breaks the stream.
const READ_LIMIT_BYTES: usize = 64 * 1024;
/// Socket read buffer: small, because phones send little (the default would be 128 KiB each;
/// it is allocated and zeroed for every phone, and grows for the rare longer message).
const READ_BUFFER_BYTES: usize = 1024;
/// How long a phone has to say hello.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the server pings; a phone silent for `IDLE_TIMEOUT` is dead.
const PING_INTERVAL: Duration = Duration::from_secs(15);
const IDLE_TIMEOUT: Duration = Duration::from_secs(45);
/// A socket that cannot take one message in this long is treated as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing frame may take: the phone may be the reason it closes.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages a phone may send per second, on average, and in a burst.
const CLIENT_MSGS_PER_SEC: f64 = 20.0;
const CLIENT_MSG_BURST: f64 = 40.0;
/// Seat and GPS attempts a phone may make at once before `phone_locate_per_min` applies.
const PHONE_LOCATE_BURST: f64 = 5.0;
const TOO_MANY_ATTEMPTS: &str = "too many attempts: wait a few seconds and try again";

/// The phone's socket. Upgrade to WebSocket, then send `hello` (docs/protocol.md).
#[utoipa::path(get, path = "/ws/scenes/{scene_id}", tag = "realtime",
    params(("scene_id" = Uuid, Path)),
    responses((status = 101, description = "switching to the WebSocket protocol of docs/protocol.md"),
        (status = 400, body = crate::error::ErrorBody),
        (status = 426, description = "not a WebSocket upgrade request"),
        (status = 429, body = crate::error::ErrorBody, description = "too many sockets from this address have not said hello yet")))]
async fn scene_socket(
    State(state): State<AppState>,
    client: ClientIp,
    scene_id: Result<Path<Uuid>, PathRejection>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let scene_id = match scene_id {
        Ok(Path(id)) => id,
        Err(e) => return Error::bad_request("bad_path", e.body_text()).into_response(),
    };
    let (ws, pending) = match accept(&state, client.ip, ws) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    ws.on_upgrade(move |socket| async move {
        let mut socket = socket;
        let end = session(&state, scene_id, &mut socket, pending, client.ip).await;
        let (code, reason) = end;
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        }));
        if !matches!(timeout(CLOSE_TIMEOUT, socket.send(close)).await, Ok(Ok(()))) {
            // the phone closed first: its close frame was answered in the socket's own
            // queue, which only a flush writes
            let _ = timeout(CLOSE_TIMEOUT, futures::SinkExt::flush(&mut socket)).await;
        }
        // what the phone still sends is read (and dropped) until its close frame: a
        // connection closed with bytes unread is reset, and the reset loses the close
        // frame the phone has not read yet
        let drain = async {
            while let Some(Ok(msg)) = socket.recv().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = timeout(CLOSE_TIMEOUT, drain).await;
    })
}

/// A socket that only keeps a clock (`GET /ws/clock`): it answers `sync` as the phones'
/// socket does, and nothing else. Beacon pages sync with it (docs/sound.md): their chirps are
/// only as well placed in time as their clocks. It counts as a socket that has not said hello
/// for as long as it is open (`C3S_PENDING_SOCKETS_PER_ADDRESS` bounds them per address).
#[utoipa::path(get, path = "/ws/clock", tag = "realtime",
    responses((status = 101, description = "switching to the WebSocket protocol: send `sync`, get `sync` back (docs/protocol.md)"),
        (status = 426, description = "not a WebSocket upgrade request"),
        (status = 429, body = crate::error::ErrorBody, description = "too many such sockets from this address")))]
async fn clock_socket(
    State(state): State<AppState>,
    client: ClientIp,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let (ws, pending) = match accept(&state, client.ip, ws) {
        Ok(accepted) => accepted,
        Err(refused) => return *refused,
    };
    ws.on_upgrade(move |mut socket| async move {
        let _pending = pending;
        let mut messages = Bucket::new(CLIENT_MSGS_PER_SEC, CLIENT_MSG_BURST);
        let (code, reason) = loop {
            let msg = match timeout(IDLE_TIMEOUT, socket.recv()).await {
                Err(_) => break end(close::HEARTBEAT_TIMEOUT, "no sync for too long"),
                Ok(None) => break end(close::BYE, "bye"),
                Ok(Some(msg)) => msg,
            };
            let t1 = clock::now_us();
            if !messages.take() {
                break end(close::TOO_MANY_MESSAGES, "too many messages");
            }
            match parse(msg) {
                Ok(None) => {}
                Ok(Some(ClientMsg::Sync { t0 })) => {
                    if let Err(e) = reply_sync(&mut socket, t0, t1).await {
                        break e;
                    }
                }
                Ok(Some(_)) => break end(close::BAD_MESSAGE, "this socket only answers sync"),
                Err(e) => break e,
            }
        };
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        }));
        let _ = timeout(CLOSE_TIMEOUT, socket.send(close)).await;
    })
}

/// What both sockets take before the upgrade: a place among this address's sockets that have
/// not said hello, and the read limits.
fn accept(
    state: &AppState,
    ip: std::net::IpAddr,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<(WebSocketUpgrade, PendingHello), Box<Response>> {
    let ws = ws.map_err(|e| Box::new(e.into_response()))?;
    let pending = PendingHello::enter(state, ip).map_err(|e| Box::new(e.into_response()))?;
    let ws = ws
        .max_message_size(READ_LIMIT_BYTES)
        .max_frame_size(READ_LIMIT_BYTES)
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(0);
    Ok((ws, pending))
}

type End = (u16, String);

fn end(code: u16, reason: impl Into<String>) -> End {
    (code, reason.into())
}

async fn send(socket: &mut WebSocket, msg: Message) -> Result<(), End> {
    match timeout(SEND_TIMEOUT, socket.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(end(close::GOING_AWAY, "send failed")),
    }
}

/// Runs one phone's session; returns the close code and reason to end it with.
async fn session(
    state: &AppState,
    scene_id: Uuid,
    socket: &mut WebSocket,
    pending: PendingHello,
    ip: std::net::IpAddr,
) -> End {
    let (code, reason) = match run(state, scene_id, socket, pending, ip).await {
        Ok(end) | Err(end) => end,
    };
    (code, bounded_reason(reason))
}

/// Most bytes a close frame's reason may have (RFC 6455: 125 in the frame, less the code's 2).
const MAX_CLOSE_REASON_BYTES: usize = 123;

/// The reason cut to what a close frame can carry, at a character boundary: a reason that
/// does not fit makes standard clients fail the frame and never see the code.
fn bounded_reason(mut reason: String) -> String {
    if reason.len() > MAX_CLOSE_REASON_BYTES {
        let mut cut = MAX_CLOSE_REASON_BYTES;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
    }
    reason
}

/// A socket from `ip` that has not said hello yet: counted while it lives, so one address
/// cannot hold thousands of silent sockets.
struct PendingHello {
    pending: std::sync::Arc<dashmap::DashMap<std::net::IpAddr, u32>>,
    ip: std::net::IpAddr,
}

impl PendingHello {
    fn enter(state: &AppState, ip: std::net::IpAddr) -> Result<PendingHello, Error> {
        let limit = state.config.pending_sockets_per_address;
        let mut count = state.pending_sockets.entry(ip).or_insert(0);
        if limit > 0 && *count >= limit {
            metrics::counter!("c3s_sockets_refused_total", "why" => "pending").increment(1);
            return Err(Error::TooManyRequests {
                message: "too many sockets from this address have not said hello yet".into(),
                retry_after_s: 1,
            });
        }
        *count += 1;
        drop(count);
        Ok(PendingHello {
            pending: state.pending_sockets.clone(),
            ip,
        })
    }
}

impl Drop for PendingHello {
    fn drop(&mut self) {
        self.pending.remove_if_mut(&self.ip, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

/// Reads the next message as a `ClientMsg`, mapping every way it can be wrong to a close.
fn parse(msg: Result<Message, axum::Error>) -> Result<Option<ClientMsg>, End> {
    match msg {
        Ok(Message::Text(text)) if text.len() > MAX_CLIENT_MESSAGE_BYTES => {
            Err(end(close::TOO_BIG, "message too big"))
        }
        Ok(Message::Text(text)) => serde_json::from_str(text.as_str())
            .map(Some)
            // a fixed reason: never the client's own text back (and always within the 123
            // bytes a close frame's reason may have)
            .map_err(|_| {
                end(
                    close::BAD_MESSAGE,
                    "bad message: not a message of this protocol",
                )
            }),
        Ok(Message::Binary(_)) => Err(end(close::BAD_MESSAGE, "binary messages are not accepted")),
        Ok(Message::Ping(_) | Message::Pong(_)) => Ok(None),
        Ok(Message::Close(_)) => Err(end(close::BYE, "bye")),
        Err(e) => {
            let text = format!("{e}");
            if text.contains("too long") || text.contains("Space limit") || text.contains("size") {
                Err(end(close::TOO_BIG, "message too big"))
            } else {
                Err(end(close::GOING_AWAY, "read failed"))
            }
        }
    }
}

async fn run(
    state: &AppState,
    scene_id: Uuid,
    socket: &mut WebSocket,
    pending: PendingHello,
    ip: std::net::IpAddr,
) -> Result<End, End> {
    // 1. hello
    let hello = match timeout(HELLO_TIMEOUT, socket.recv()).await {
        Ok(Some(msg)) => parse(msg)?,
        Ok(None) => return Err(end(close::GOING_AWAY, "closed")),
        Err(_) => return Err(end(close::HELLO_EXPECTED, "hello expected")),
    };
    drop(pending);
    let Some(ClientMsg::Hello { protocol, token }) = hello else {
        return Err(end(
            close::HELLO_EXPECTED,
            "the first message must be hello",
        ));
    };
    if protocol != PROTOCOL_VERSION {
        return Err(end(
            close::UNSUPPORTED_PROTOCOL,
            format!(
                "unsupported protocol version {protocol}; this server speaks {PROTOCOL_VERSION}"
            ),
        ));
    }

    // 2. identity and join, in turn with the other phones arriving (`joins`)
    let unavailable = || {
        end(
            close::UNAVAILABLE,
            "the server cannot take phones right now; retry shortly",
        )
    };
    let mut ask = store::joins::Ask {
        scene_id,
        token_hash: token.as_deref().map(auth::hash_token),
    };
    let joined = loop {
        // a new identity counts against the address's guest allowance, as `POST /auth/guest`
        // does
        if ask.token_hash.is_none() && state.rate_limits.guests.check(&ip).is_err() {
            return Err(end(
                close::UNAVAILABLE,
                "too many new phones from this address; retry shortly",
            ));
        }
        match wait_for_join(state, socket, ask.clone()).await? {
            Answer::NoScene => return Err(end(close::NOT_JOINABLE, "no such scene is open")),
            // a phone that comes back after the end is told so, and stops retrying
            Answer::NotJoinable(scene) if scene.status == SceneStatus::Ended => {
                let (code, reason) = CloseReason::SceneEnded.close_frame();
                return Err(end(code, reason));
            }
            Answer::NotJoinable(_) => {
                return Err(end(close::NOT_JOINABLE, "no such scene is open"))
            }
            // a dead token: the phone joins as a new one
            Answer::UnknownToken if ask.token_hash.is_some() => ask.token_hash = None,
            Answer::UnknownToken => return Err(unavailable()),
            Answer::Joined(joined) => break joined,
        }
    };
    let store::joins::Joined {
        scene,
        user_id,
        token: new_token,
        pixel,
        log_seq,
    } = joined;
    if pixel.status == PixelStatus::Kicked {
        let (code, reason) = CloseReason::Kicked.close_frame();
        return Err(end(code, reason));
    }
    let scene_hub = match state.follower.scene_hub(scene_id).await {
        Ok(hub) => hub,
        Err(e) => {
            tracing::warn!(error = ?e, "socket join failed");
            return Err(unavailable());
        }
    };
    let (conn, mut queue) = state.hub.connect(
        &scene_hub,
        pixel.pixel_id,
        pixel.x.zip(pixel.y).map(|(x, y)| (x as f32, y as f32)),
        state.config.ws_queue_capacity,
    );
    let _leave = Leave {
        state,
        scene: &scene_hub,
        conn_id: conn.id,
    };
    if scene_hub.is_ended() {
        let (code, reason) = CloseReason::SceneEnded.close_frame();
        return Err(end(code, reason));
    }
    // a node shutting down closed the phones it held before this one was among them
    if state.shutdown.is_cancelled() {
        return Err(end(close::GOING_AWAY, "server shutting down"));
    }
    // A placement or kick the hub applied before this phone was in it would be missed. Every
    // event applied from now on finds the phone (it is in the hub before the follower's lock
    // is taken here); one applied already is either older than the pixel's row (so the row
    // shows it) or newer, and then the row is read once more.
    let applied = {
        let _applying = scene_hub.applying.lock().await;
        scene_hub.applied_seq()
    };
    let pixel = if applied > log_seq {
        match store::scenes::pixel_by_id(&state.phone_db, scene_id, pixel.pixel_id).await {
            Ok(Some(now)) if now.status == PixelStatus::Kicked => {
                let (code, reason) = CloseReason::Kicked.close_frame();
                return Err(end(code, reason));
            }
            Ok(Some(now)) => {
                if now.x != pixel.x || now.y != pixel.y {
                    conn.set_position(now.x.zip(now.y).map(|(x, y)| (x as f32, y as f32)));
                }
                now
            }
            _ => pixel,
        }
    } else {
        pixel
    };
    let position = pixel.x.zip(pixel.y);
    let public = ScenePublic::from(&scene);
    let welcome = ServerMsg::Welcome {
        protocol: PROTOCOL_VERSION,
        token: new_token.as_deref(),
        user_id,
        pixel_id: pixel.pixel_id,
        scene: &public,
        position: position.map(|(x, y)| Position { x, y }),
        server_time_us: clock::now_us(),
        tick_ms: state.config.tick_ms,
        lookahead_ms: state.config.lookahead_ms,
    };
    send(socket, Message::Text(welcome.to_json().into())).await?;
    state.scheduler.wake();
    metrics::counter!("c3s_joins_total").increment(1);
    let (chunks_out, texts_out, bytes_out) = (
        metrics::counter!("c3s_messages_out_total", "kind" => "chunk"),
        metrics::counter!("c3s_messages_out_total", "kind" => "text"),
        metrics::counter!("c3s_bytes_out_total"),
    );
    let sync_errors = metrics::histogram!("c3s_sync_error_ms");

    // 3. the session
    let mut ping = interval(PING_INTERVAL);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let mut messages = Bucket::new(CLIENT_MSGS_PER_SEC, CLIENT_MSG_BURST);
    let mut locating = Bucket::new(
        state.config.phone_locate_per_min as f64 / 60.0,
        PHONE_LOCATE_BURST,
    );
    // made once, not at every message: the waits on the phone's token (the node's shutdown
    // closes it too, see `Hub::close_all`) and on its control messages
    let closing = conn.closing().cancelled();
    tokio::pin!(closing);
    let control = conn.control_ready();
    tokio::pin!(control);
    loop {
        tokio::select! {
            biased;
            _ = &mut closing => {
                let (code, reason) = conn.close_reason().close_frame();
                return Ok(end(code, reason));
            }
            // control text before the phone's own messages: small, the newest of each kind,
            // and never starved by a phone that floods
            _ = &mut control => {
                control.set(conn.control_ready());
                for text in conn.take_control() {
                    texts_out.increment(1);
                    bytes_out.increment(text.len() as u64);
                    send_while_open(socket, Message::Text(text.into()), &conn, closing.as_mut()).await?;
                }
            }
            msg = socket.recv() => {
                let t1 = clock::now_us();
                let Some(msg) = msg else { return Err(end(close::GOING_AWAY, "closed")) };
                last_heard = Instant::now();
                // a phone that floods is cut off, not served
                if !messages.take() {
                    return Err(end(close::TOO_MANY_MESSAGES, "too many messages"));
                }
                match parse(msg)? {
                    None => {}
                    Some(ClientMsg::Hello { .. }) => {
                        return Err(end(close::BAD_MESSAGE, "hello was already said"));
                    }
                    Some(ClientMsg::Sync { t0 }) => reply_sync(socket, t0, t1).await?,
                    Some(ClientMsg::SyncReport { error_ms, .. }) if error_ms.is_finite() => {
                        conn.report_sync(error_ms);
                        sync_errors.record(error_ms.abs());
                    }
                    Some(ClientMsg::SyncReport { .. }) => {}
                    // seat and GPS attempts each write to the scene: a phone has a few, then
                    // one every few seconds (the others are told to wait, not closed)
                    Some(ClientMsg::Seat { .. }) if !locating.take() => {
                        refuse(socket, LocationMethod::Seat, Some(TOO_MANY_ATTEMPTS.into())).await?;
                    }
                    Some(ClientMsg::Gps { .. }) if !locating.take() => {
                        refuse(socket, LocationMethod::Gps, Some(TOO_MANY_ATTEMPTS.into())).await?;
                    }
                    // each asks the database for the scene and renders a code: under the same
                    // allowance
                    Some(ClientMsg::Sound { .. }) if !locating.take() => {
                        refuse(socket, LocationMethod::Sound, Some(TOO_MANY_ATTEMPTS.into())).await?;
                    }
                    Some(ClientMsg::ShowQr) if !locating.take() => {
                        refuse(socket, LocationMethod::Qr, Some(TOO_MANY_ATTEMPTS.into())).await?;
                    }
                    Some(ClientMsg::Seat { section, row, seat }) => {
                        let scene = current(state, &scene).await;
                        let refused = locate_by_seat(state, &scene, &conn, &section, &row, &seat).await;
                        refuse(socket, LocationMethod::Seat, refused).await?;
                    }
                    Some(ClientMsg::ShowQr) => {
                        // as `POST .../qr-codes` does: only where the scene locates by QR
                        let scene = current(state, &scene).await;
                        if scene.location_methods.contains(&LocationMethod::Qr) {
                            let msg = qr_message(&state.secret, scene_id, pixel.pixel_id);
                            send(socket, Message::Text(msg.into())).await?;
                        } else {
                            let refused = Some("this scene does not locate phones by QR code".to_owned());
                            refuse(socket, LocationMethod::Qr, refused).await?;
                        }
                    }
                    Some(ClientMsg::Sound { session_id, arrivals }) => {
                        let scene = current(state, &scene).await;
                        let refused = sound::locate_by_sound(state, &scene, &conn, session_id, &arrivals).await;
                        refuse(socket, LocationMethod::Sound, refused).await?;
                    }
                    Some(ClientMsg::Gps { lat, lon, accuracy_m }) => {
                        let scene = current(state, &scene).await;
                        let refused = locate_by_gps(state, &scene, &conn, lat, lon, accuracy_m).await;
                        refuse(socket, LocationMethod::Gps, refused).await?;
                    }
                }
            }
            chunk = queue.recv() => {
                let Some(chunk) = chunk else { return Ok(end(close::BYE, "bye")) };
                chunks_out.increment(1);
                bytes_out.increment(chunk.len() as u64);
                send_while_open(socket, Message::Binary(chunk), &conn, closing.as_mut()).await?;
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    return Err(end(close::HEARTBEAT_TIMEOUT, "no answer to pings"));
                }
                send(socket, Message::Ping(Default::default())).await?;
            }
        }
    }
}

/// How long a phone waits for its join before it is told it is queued, and how often again.
const QUEUED_NOTICE: Duration = Duration::from_secs(1);
const QUEUED_NOTICE_EVERY: Duration = Duration::from_secs(5);

/// Queues the phone's join and waits for it, telling the phone it is queued (and roughly how
/// many are ahead of it) when it waits more than a moment: its page says "joining…" and it
/// keeps waiting instead of giving up.
async fn wait_for_join(state: &AppState, socket: &mut WebSocket, ask: Ask) -> Result<Answer, End> {
    let unavailable = end(
        close::UNAVAILABLE,
        "the server cannot take phones right now; retry shortly",
    );
    let Ok(answer) = state.joins.ask(ask) else {
        return Err(unavailable);
    };
    tokio::pin!(answer);
    let mut notice = tokio::time::interval_at(Instant::now() + QUEUED_NOTICE, QUEUED_NOTICE_EVERY);
    loop {
        tokio::select! {
            got = &mut answer => {
                return match got {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(Unavailable)) | Err(_) => Err(unavailable),
                };
            }
            _ = state.shutdown.cancelled() => {
                return Err(end(close::GOING_AWAY, "server shutting down"));
            }
            _ = notice.tick() => {
                let ahead = state.joins.waiting();
                metrics::counter!("c3s_joins_queued_notices_total").increment(1);
                send(socket, Message::Text(ServerMsg::Queued { ahead }.to_json().into())).await?;
            }
        }
    }
}

/// Whether the scene's phones may write one more placement now (`scene_phone_writes_per_s`).
fn scene_may_write(state: &AppState, scene_id: Uuid) -> bool {
    let per_s = state.config.scene_phone_writes_per_s;
    if per_s == 0 {
        return true;
    }
    let bucket = state.phone_writes.entry(scene_id).or_insert_with(|| {
        std::sync::Mutex::new(Bucket::new(f64::from(per_s), f64::from(per_s) * 10.0))
    });
    let allowed = bucket.lock().expect("bucket lock").take();
    if !allowed {
        metrics::counter!("c3s_scene_writes_refused_total").increment(1);
    }
    allowed
}

/// Sends `msg`, unless the phone is dropped while its socket is stalled: a phone that stopped
/// reading fills its queue and is closed as lagging (4008), not after the send timeout.
async fn send_while_open(
    socket: &mut WebSocket,
    msg: Message,
    conn: &Conn,
    closing: std::pin::Pin<&mut tokio_util::sync::WaitForCancellationFuture<'_>>,
) -> Result<(), End> {
    tokio::select! {
        sent = send(socket, msg) => sent,
        _ = closing => {
            let (code, reason) = conn.close_reason().close_frame();
            Err(end(code, reason))
        }
    }
}

/// Answers a clock-sync request read at `t1`. The reply goes out at once, ahead of any colour
/// chunk waiting in the hub queue (the session reads before it drains the queue), and `t2` is
/// stamped once the socket has taken every earlier frame: just before this one is written.
async fn reply_sync(socket: &mut WebSocket, t0: f64, t1: i64) -> Result<(), End> {
    let ready = timeout(
        SEND_TIMEOUT,
        futures::future::poll_fn(|cx| futures::SinkExt::poll_ready_unpin(socket, cx)),
    );
    if !matches!(ready.await, Ok(Ok(()))) {
        return Err(end(close::GOING_AWAY, "send failed"));
    }
    let reply = ServerMsg::Sync {
        t0,
        t1,
        t2: clock::now_us(),
    };
    send(socket, Message::Text(reply.to_json().into())).await
}

/// Tells the phone why its seat or GPS position was not taken (when it was not).
async fn refuse(
    socket: &mut WebSocket,
    method: LocationMethod,
    refused: Option<String>,
) -> Result<(), End> {
    match refused {
        None => Ok(()),
        Some(reason) => {
            let msg = ServerMsg::LocateRefused { method, reason }.to_json();
            send(socket, Message::Text(msg.into())).await
        }
    }
}

/// The scene as it is now (its locating methods may have changed since the phone joined);
/// the one from the join if the database cannot say.
async fn current(state: &AppState, joined: &Scene) -> Scene {
    match store::scenes::scene_by_id(&state.db, joined.scene_id).await {
        Ok(Some(scene)) => scene,
        _ => joined.clone(),
    }
}

/// How much a seat number is trusted (people mistype) and a GPS fix within the threshold.
const SEAT_CONFIDENCE: f32 = 0.9;
const GPS_CONFIDENCE: f32 = 0.7;

/// Places the phone at its seat; the reason when it cannot.
async fn locate_by_seat(
    state: &AppState,
    scene: &Scene,
    conn: &Conn,
    section: &str,
    row: &str,
    seat: &str,
) -> Option<String> {
    let pixel_id = conn.pixel_id;
    if !scene.location_methods.contains(&LocationMethod::Seat) {
        return Some("this scene does not locate phones by seat".into());
    }
    let parts = (
        normalise("section", section),
        normalise("row", row),
        normalise("seat", seat),
    );
    let (section, row, seat) = match parts {
        (Ok(section), Ok(row), Ok(seat)) => (section, row, seat),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Some(e.to_string()),
    };
    let found =
        store::locate::seat_position(&state.db, scene.scene_id, &section, &row, &seat).await;
    let (x, y) = match found {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Some(format!(
                "there is no seat {seat} in row {row} of section {section}"
            ))
        }
        Err(e) => {
            tracing::warn!(error = ?e, "seat lookup failed");
            return Some("seats cannot be looked up right now; try again".into());
        }
    };
    if !scene.contains(x, y) {
        return Some(format!(
            "seat {seat} in row {row} of section {section} is outside this scene's area"
        ));
    }
    // a seat holds one phone: the first to claim it keeps it (a second phone typing the same
    // seat is told, and an operator can free the seat by kicking the wrong one)
    match store::locate::seat_taken(&state.db, scene.scene_id, pixel_id, x, y).await {
        Ok(false) => {}
        Ok(true) => {
            return Some(format!(
                "seat {seat} in row {row} of section {section} is already taken by another phone; check your ticket or ask a steward"
            ))
        }
        Err(e) => {
            tracing::warn!(error = ?e, "seat lookup failed");
            return Some("seats cannot be looked up right now; try again".into());
        }
    }
    if !scene_may_write(state, scene.scene_id) {
        return Some(TOO_MANY_ATTEMPTS.into());
    }
    let obs = Observation {
        x,
        y,
        method: LocationMethod::Seat,
        confidence: SEAT_CONFIDENCE,
    };
    placed_or_reason(
        conn,
        state
            .placements
            .place(scene.scene_id, pixel_id, obs, None)
            .await,
    )
}

/// Places the phone at its GPS position; the reason when it cannot.
async fn locate_by_gps(
    state: &AppState,
    scene: &Scene,
    conn: &Conn,
    lat: f64,
    lon: f64,
    accuracy_m: f64,
) -> Option<String> {
    let pixel_id = conn.pixel_id;
    if !scene.location_methods.contains(&LocationMethod::Gps) {
        return Some("this scene does not locate phones by GPS".into());
    }
    let reference = match store::locate::geo_reference(&state.db, scene.scene_id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Some("this scene is not geo-referenced yet".into()),
        Err(e) => {
            tracing::warn!(error = ?e, "geo-reference lookup failed");
            return Some("positions cannot be taken right now; try again".into());
        }
    };
    let (points, threshold_m) = reference;
    let valid =
        accuracy_m.is_finite() && accuracy_m > 0.0 && lat.abs() <= 90.0 && lon.abs() <= 180.0;
    if !valid {
        return Some("that is not a position".into());
    }
    if accuracy_m > threshold_m {
        return Some(format!(
            "the position is accurate to {accuracy_m:.0} m; this scene needs {threshold_m:.0} m or better"
        ));
    }
    let Ok(fit) = GeoReference::fit(&points) else {
        return Some("this scene's geo-reference is unusable".into());
    };
    let (x, y) = fit.to_scene(lat, lon);
    if !scene.contains(x, y) {
        return Some("the position is outside the scene".into());
    }
    if !scene_may_write(state, scene.scene_id) {
        return Some(TOO_MANY_ATTEMPTS.into());
    }
    let obs = Observation {
        x,
        y,
        method: LocationMethod::Gps,
        confidence: GPS_CONFIDENCE,
    };
    placed_or_reason(
        conn,
        state
            .placements
            .place(scene.scene_id, pixel_id, obs, None)
            .await,
    )
}

fn placed_or_reason(
    conn: &Conn,
    result: Result<Result<Placement, Refused>, PlaceError>,
) -> Option<String> {
    match result {
        Ok(Ok(p)) if p.unchanged => {
            // no event was written, so the follower will not tell the phone: tell it here
            if let Some((x, y)) = p.pixel.as_ref().and_then(|p| p.x.zip(p.y)) {
                conn.offer_text(ServerMsg::Located { x, y }.to_json());
            }
            None
        }
        Ok(Ok(p)) if p.placed => None,
        Ok(Ok(_)) => Some("recorded, but not confident enough to move the phone".into()),
        Ok(Err(refused)) => Some(refused.to_string()),
        Err(e) => Some(e.to_string()),
    }
}

/// Removes the connection from the hub however the session ends.
struct Leave<'a> {
    state: &'a AppState,
    scene: &'a SceneHub,
    conn_id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.state.hub.disconnect(self.scene, self.conn_id);
    }
}
