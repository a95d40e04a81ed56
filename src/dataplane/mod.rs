//! The data plane (DESIGN.md, "Shape"): what keeps a crowd's screens right, with no database
//! in the way. Nothing here imports axum, sqlx or mongodb, nor the `http`, `ws` or `store`
//! modules: it reads the log through [`follower::SceneLog`] and frame bytes through
//! [`framecache::FrameSource`], which the store implements.
//!
//! Two paths run through it:
//! - **join → hub → scheduler → socket**: a phone's session (`ws`) registers it in the
//!   [`hub`] (its scene's connections and the snapshot its colours come from); every tick the
//!   [`scheduler`] builds each located phone's next window of colours as a [`chunk`], from
//!   frames the [`framecache`] has resampled onto the show's [`grid`], and queues it to the
//!   phone without waiting; the session writes its queue to the socket, speaking
//!   [`protocol`].
//! - **command → log → follower → hub**: a command (`commands`) appends its events to the
//!   scene's log; the [`follower`] on every node applies them to its hub (a new show version,
//!   a phone placed or kicked, the scene ended) and announces each change to the scene's
//!   watchers.
//!
//! Besides: [`signals`] to single phones (identify, show your QR code), which reach a phone on
//! whichever node holds it, and [`presence`], the counts an operator sees.

pub mod chunk;
pub mod follower;
pub mod framecache;
pub mod grid;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod scheduler;
pub mod signals;
