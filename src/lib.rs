//! C3S, the Cloud Scene Screen Service: a stadium crowd becomes one screen.
//!
//! Crate map (see `DESIGN.md` for the architecture):
//! - [`config`]: every setting, from flags and environment.
//! - [`app`]: shared state, start-up (stores, migrations, listener) and shutdown.
//! - [`error`]: the HTTP-facing error and its JSON body.
//! - [`auth`]: passwords, tokens, permissions and the checks made on them.
//! - [`scene`]: scenes and pixels as the API speaks of them.
//! - [`frames`]: checking uploads and splitting animations into frames.
//! - [`store`]: the only code that talks to PostgreSQL and GridFS.
//! - [`clock`]: server time and the maths of clock sync.
//! - [`playback`]: shows and playback timelines, as pure functions of time.
//! - [`chunk`]: the binary colour chunk phones receive.
//! - [`framecache`]: frames decoded and resampled to a show's grid.
//! - [`hub`]: this node's phones and scene snapshots (the data plane).
//! - [`scheduler`]: the hot path that turns snapshots into chunks every tick.
//! - [`live`]: publishes control-plane changes to the hub; resolves observations.
//! - [`locate`]: locating methods (observations, GPS, seat maps).
//! - [`ws`]: the phones' WebSocket sessions and protocol.
//! - [`http`]: thin axum handlers, one module per domain, and the OpenAPI document.
//! - [`testkit`]: real PostgreSQL databases and SecantusDB processes for tests and benches.

pub mod app;
pub mod auth;
pub mod backup;
pub mod chunk;
pub mod clock;
pub mod config;
pub mod error;
pub mod events;
pub mod framecache;
pub mod frames;
pub mod http;
pub mod hub;
pub mod ics;
pub mod live;
pub mod locate;
pub mod placements;
pub mod playback;
pub mod scene;
pub mod scheduler;
pub mod search;
pub mod store;
pub mod telemetry;
pub mod testkit;
pub mod views;
pub mod ws;
