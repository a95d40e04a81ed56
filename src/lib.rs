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
//! - [`http`]: thin axum handlers, one module per domain, and the OpenAPI document.
//! - [`testkit`]: real PostgreSQL databases and SecantusDB processes for tests and benches.

pub mod app;
pub mod auth;
pub mod config;
pub mod error;
pub mod frames;
pub mod http;
pub mod scene;
pub mod store;
pub mod testkit;
