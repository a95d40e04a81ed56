//! C3S, the Cloud Scene Screen Service: a stadium crowd becomes one screen.
//!
//! Crate map (see `DESIGN.md` for the architecture). Two paths to follow:
//! **join → hub → scheduler → socket** (`ws`, then [`dataplane`]) and
//! **command → log → follower → hub** ([`commands`], `store::events`, then [`dataplane`]).
//!
//! Start-up and the edges:
//! - [`config`]: every setting, from flags and environment.
//! - [`app`]: shared state, start-up (stores, migrations, listener, background tasks) and
//!   shutdown.
//! - [`budget`]: bounded queues for expensive work (password hashing); `429` when full.
//! - [`http`]: thin axum handlers, one module per domain, and the OpenAPI document;
//!   [`error`]: the HTTP-facing error and its JSON body (the only place statuses are chosen,
//!   with `ws` for close codes).
//! - [`ws`]: the phones' WebSocket sessions.
//!
//! The data plane, in [`dataplane`] (no database, no HTTP): the hub of connected phones, the
//! playback scheduler, colour chunks, the frame cache and grids, the phone protocol and its
//! close codes, the log follower, phone signals and presence counts.
//!
//! The control plane:
//! - [`commands`]: the one path for scene commands (lock order, append, commit, local
//!   apply), and the batched placement path every locating method ends in.
//! - [`nodes`]: what nodes tell each other: log announcements, phone signals and their
//!   answers, heartbeats and presence.
//! - [`store`]: the only code that talks to PostgreSQL and GridFS (and backups of both).
//! - [`views`]: named consumers of the scene log (the scene summary).
//!
//! The domain, pure where it can be:
//! - [`auth`]: passwords, tokens, permissions and the checks made on them.
//! - [`scene`]: scenes and pixels as the API speaks of them.
//! - [`events`]: the scene log's events, and the show folded from them.
//! - [`clock`]: server time and the maths of clock sync.
//! - [`playback`]: shows and playback timelines, as pure functions of time.
//! - [`frames`]: checking uploads and splitting animations into frames.
//! - [`locate`]: locating methods (observations, homographies, GPS, seat maps, QR codes).
//! - [`search`]: the search cache; [`ics`]: iCalendar feeds.
//! - [`text`]: the one check every text a client sends goes through.
//! - [`telemetry`]: metrics and their listener.
//! - `testkit` (feature `testkit`): real PostgreSQL databases and SecantusDB processes for
//!   tests, benches and the load generator.

pub mod app;
pub mod auth;
pub mod budget;
pub mod clips;
pub mod clock;
pub mod commands;
pub mod config;
pub mod dataplane;
pub mod error;
pub mod events;
pub mod frames;
pub mod http;
pub mod ics;
pub mod locate;
pub mod nodes;
pub mod playback;
pub mod scene;
pub mod search;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod text;
pub mod views;
pub mod ws;
