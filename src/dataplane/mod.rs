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
pub mod clips;
pub mod follower;
pub mod framecache;
pub mod grid;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod scheduler;
pub mod signals;

#[cfg(test)]
mod tests {
    /// The data plane stays free of transport and storage: none of its files names axum,
    /// sqlx, mongodb or the crate's `http`, `ws` and `store` modules.
    #[test]
    fn the_data_plane_imports_no_transport_or_storage() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/dataplane");
        let mut files = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            files += 1;
            let text = std::fs::read_to_string(&path).unwrap();
            // (a file's tests may use anything: only what comes before them counts)
            let lines = text.lines().take_while(|l| !l.starts_with("#[cfg(test)]"));
            for (n, line) in lines.enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for banned in [
                    "axum::",
                    "sqlx::",
                    "mongodb::",
                    "crate::http",
                    "crate::ws",
                    "crate::store",
                ] {
                    assert!(
                        !code.contains(banned),
                        "{}:{}: the data plane uses `{banned}`: {line}",
                        path.display(),
                        n + 1
                    );
                }
            }
        }
        assert!(
            files >= 9,
            "the data plane's files were not found in {}",
            dir.display()
        );
    }
}
