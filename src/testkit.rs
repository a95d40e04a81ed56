//! Real components for tests and benchmarks: a fresh PostgreSQL database, a private
//! SecantusDB (GridFS) process. Not used by the server itself.
//!
//! PostgreSQL: `C3S_TEST_DATABASE_URL` names a server where databases may be created (default:
//! the machine's, `postgres://postgres@127.0.0.1:5432/postgres`); `scripts/test` points it at a
//! private throw-away cluster. SecantusDB: `C3S_SECANTUSD`, or the project's `.venv`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use sqlx::Connection;
use uuid::Uuid;

fn admin_url() -> String {
    std::env::var("C3S_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// Creates a new, empty PostgreSQL database and returns its URL.
pub async fn fresh_database() -> anyhow::Result<String> {
    let admin = admin_url();
    let name = format!("c3s_test_{}", Uuid::new_v4().simple());
    let mut conn = sqlx::PgConnection::connect(&admin).await?;
    sqlx::query(&format!("create database {name}"))
        .execute(&mut conn)
        .await?;
    let (base, _) = admin
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("database URL has no path"))?;
    Ok(format!("{base}/{name}"))
}

/// A SecantusDB process started here, in memory, on a free port. Killed (by its PID) on drop,
/// and by the kernel if this process dies first.
pub struct Secantus {
    child: Child,
    pub url: String,
}

impl Drop for Secantus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Secantus {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts it and waits until it listens.
    pub fn start() -> anyhow::Result<Secantus> {
        let bin = std::env::var("C3S_SECANTUSD")
            .unwrap_or_else(|_| format!("{}/.venv/bin/secantusd-py", env!("CARGO_MANIFEST_DIR")));
        // setpriv --pdeathsig: the store dies with the thread that started it
        let mut child = Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(&bin)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                "0",
                "--storage-path",
                ":memory:",
            ])
            .args(["--log-level", "INFO"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("starting {bin} (run scripts/test or set MONGODB_URL): {e}")
            })?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let mut lines = BufReader::new(stderr).lines();
        let port = loop {
            let line = lines
                .next()
                .ok_or_else(|| anyhow::anyhow!("secantusd-py exited before listening"))??;
            if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                break rest.trim().parse::<u16>()?;
            }
        };
        // keep draining its log so it never blocks on a full pipe
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Secantus {
            child,
            url: format!("mongodb://127.0.0.1:{port}/?directConnection=true"),
        })
    }
}

/// The MongoDB URL shared by everything in this process: `MONGODB_URL`, or one SecantusDB
/// started on first use and ended with the process.
pub fn shared_mongodb_url() -> String {
    if let Ok(url) = std::env::var("MONGODB_URL") {
        return url;
    }
    static SHARED: OnceLock<String> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            // Started from a thread that lives as long as the process, because the
            // parent-death signal fires when the *thread* that spawned the child ends.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let store = Secantus::start().expect("start SecantusDB");
                tx.send(store.url.clone()).expect("send url");
                loop {
                    std::thread::park();
                }
            });
            rx.recv().expect("SecantusDB started")
        })
        .clone()
}
