//! A phone for tests: a real WebSocket client speaking docs/protocol.md.

use std::time::Duration;

use c3s::dataplane::chunk::{self, Chunk};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use uuid::Uuid;

use crate::helpers::TestApp;

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Phone {
    pub socket: Socket,
    pub welcome: Value,
}

/// What a socket ended with.
#[derive(Debug, PartialEq)]
pub enum Ended {
    Closed(u16, String),
    /// The connection dropped without a close frame.
    Dropped,
}

pub fn ws_url(app: &TestApp, scene_id: Uuid) -> String {
    format!(
        "{}/ws/scenes/{scene_id}",
        app.base.replace("http://", "ws://")
    )
}

pub async fn open(app: &TestApp, scene_id: Uuid) -> Socket {
    let (socket, _) = tokio_tungstenite::connect_async(ws_url(app, scene_id))
        .await
        .expect("websocket connects");
    socket
}

impl Phone {
    /// Connects and says hello (with `token` from an earlier visit); expects a welcome.
    pub async fn join(app: &TestApp, scene_id: Uuid, token: Option<&str>) -> Phone {
        let mut socket = open(app, scene_id).await;
        let hello = json!({"type": "hello", "protocol": 1, "token": token});
        socket.send(Message::text(hello.to_string())).await.unwrap();
        let welcome = next_json(&mut socket).await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        Phone { socket, welcome }
    }

    pub fn token(&self) -> Option<&str> {
        self.welcome["token"].as_str()
    }

    pub fn pixel_id(&self) -> Uuid {
        self.welcome["pixel_id"].as_str().unwrap().parse().unwrap()
    }

    /// The next binary chunk, skipping text messages; panics after `within`.
    pub async fn next_chunk(&mut self, within: Duration) -> Chunk {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.socket.next())
                .await
                .expect("a chunk in time")
                .expect("socket open")
                .expect("socket read");
            if let Message::Binary(bytes) = msg {
                return chunk::decode(&bytes).expect("a well-formed chunk");
            }
        }
    }

    /// Reads until the socket ends (within `within`), returning how.
    pub async fn ended(&mut self, within: Duration) -> Ended {
        ended(&mut self.socket, within).await
    }
}

/// Opens a socket, says hello (with `token`) and returns the close code the server ends it
/// with; panics if it is welcomed or dropped without a reason.
pub async fn refused_code(app: &TestApp, scene_id: Uuid, token: Option<&str>) -> u16 {
    let mut socket = open(app, scene_id).await;
    let hello = json!({"type": "hello", "protocol": 1, "token": token});
    socket.send(Message::text(hello.to_string())).await.unwrap();
    match ended(&mut socket, Duration::from_secs(5)).await {
        Ended::Closed(code, _) => code,
        Ended::Dropped => panic!("dropped without a close reason"),
    }
}

pub async fn ended(socket: &mut Socket, within: Duration) -> Ended {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => panic!("the socket was not closed within {within:?}"),
            Ok(None) | Ok(Some(Err(_))) => return Ended::Dropped,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return match frame {
                    Some(f) => Ended::Closed(u16::from(f.code), f.reason.to_string()),
                    None => Ended::Closed(u16::from(CloseCode::Status), String::new()),
                }
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

pub async fn next_json(socket: &mut Socket) -> Value {
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("socket read");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// The colour the chunks say for instant `t` (latest version wins from its chunk's start).
pub fn colour_at(chunks: &[Chunk], t: i64) -> Option<[u8; 3]> {
    let newest = chunks
        .iter()
        .filter(|c| c.start_ms <= t && t < c.start_ms + i64::from(c.length_ms))
        .max_by_key(|c| (c.version, c.start_ms))?;
    newest
        .entries
        .iter()
        .take_while(|(at, _)| *at <= t)
        .last()
        .map(|(_, rgb)| *rgb)
}
