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

/// A PostgreSQL cluster of a test's own (initdb in a temporary directory, trust auth on
/// 127.0.0.1), for tests that stop and restart the database: never the machine's. Binaries:
/// `PG_BIN`, or the newest `/usr/lib/postgresql/*/bin`. Stopped and removed on drop.
pub struct PrivatePg {
    dir: std::path::PathBuf,
    bin: std::path::PathBuf,
    port: u16,
    /// PostgreSQL refuses to run as root: as root, its commands run as this user.
    run_as: Option<String>,
    /// Extra server settings (`-c name=value`).
    settings: Vec<String>,
}

impl PrivatePg {
    pub fn start() -> anyhow::Result<PrivatePg> {
        Self::start_with(&[])
    }

    /// A primary whose commits wait until a streaming replica has them
    /// (`synchronous_standby_names = '*'`): a failover to that replica loses no acknowledged
    /// commit. Start the replica with [`PrivatePg::replica_of`].
    pub fn start_primary() -> anyhow::Result<PrivatePg> {
        Self::start_with(&["synchronous_standby_names='*'", "wal_level=replica"])
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A streaming replica of `primary` (`pg_basebackup -R`), started on a port of its own.
    pub fn replica_of(primary: &PrivatePg) -> anyhow::Result<PrivatePg> {
        let pg = Self::prepare(primary.bin.clone(), primary.run_as.clone(), Vec::new())?;
        let data = pg.dir.join("data");
        pg.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                data.to_str().unwrap_or_default(),
                "-R",
                "-X",
                "stream",
            ],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    /// Makes a replica the primary (`pg_ctl promote`).
    pub fn promote(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-w", "promote"])
    }

    /// Stops it as a crash would (`pg_ctl stop -m immediate`).
    pub fn crash(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "immediate", "-w", "stop"])
    }

    fn start_with(settings: &[&str]) -> anyhow::Result<PrivatePg> {
        let bin = match std::env::var("PG_BIN") {
            Ok(bin) => std::path::PathBuf::from(bin),
            Err(_) => {
                let mut found: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")?
                    .filter_map(|e| e.ok())
                    .map(|e| e.path().join("bin"))
                    .filter(|p| p.join("initdb").exists())
                    .collect();
                found.sort_by_key(|p| {
                    p.parent()
                        .and_then(|v| v.file_name())
                        .and_then(|v| v.to_str())
                        .and_then(|v| v.parse::<u32>().ok())
                        .unwrap_or(0)
                });
                found
                    .pop()
                    .ok_or_else(|| anyhow::anyhow!("no PostgreSQL binaries (set PG_BIN)"))?
            }
        };
        let root = Command::new("id").arg("-u").output()?.stdout == b"0\n";
        let run_as = if root {
            let has = |user: &str| {
                Command::new("id")
                    .arg(user)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            };
            Some(
                ["postgres", "c3spg"]
                    .into_iter()
                    .find(|u| has(u))
                    .ok_or_else(|| anyhow::anyhow!("running as root without a postgres user"))?
                    .to_owned(),
            )
        } else {
            None
        };
        let settings = settings.iter().map(|s| s.to_string()).collect();
        let pg = Self::prepare(bin, run_as, settings)?;
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D",
                data.to_str().unwrap_or_default(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        pg.start_again()?;
        Ok(pg)
    }

    /// A directory and a port for a cluster, owned by the user that will run it.
    fn prepare(
        bin: std::path::PathBuf,
        run_as: Option<String>,
        settings: Vec<String>,
    ) -> anyhow::Result<PrivatePg> {
        let dir = std::env::temp_dir().join(format!("c3s-pg-{}", Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let pg = PrivatePg {
            dir,
            bin,
            port,
            run_as,
            settings,
        };
        if let Some(user) = &pg.run_as {
            let owned = Command::new("chown").arg(user).arg(&pg.dir).status()?;
            anyhow::ensure!(owned.success(), "chown {user} {:?}", pg.dir);
        }
        Ok(pg)
    }

    fn run(&self, tool: &str, args: &[&str]) -> anyhow::Result<()> {
        let tool = self.bin.join(tool);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&tool);
                c
            }
            None => Command::new(&tool),
        };
        let out = cmd.args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "{tool:?} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    }

    /// `pg_ctl -D <its data> ARGS`.
    fn pg_ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let data = self.dir.join("data");
        let mut all = vec!["-D", data.to_str().unwrap_or_default()];
        all.extend_from_slice(args);
        self.run("pg_ctl", &all)
    }

    /// URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts it (again), on the same port and data, and waits until it takes connections.
    pub fn start_again(&self) -> anyhow::Result<()> {
        let mut options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.display()
        );
        for setting in &self.settings {
            options.push_str(&format!(" -c {setting}"));
        }
        let log = self.dir.join("server.log");
        let log = log.to_str().unwrap_or_default();
        self.pg_ctl(&["-l", log, "-w", "-t", "60", "-o", &options, "start"])
    }

    /// Stops it as an administrator would for a restart (`pg_ctl stop -m fast`): every
    /// connection is ended.
    pub fn stop(&self) -> anyhow::Result<()> {
        self.pg_ctl(&["-m", "fast", "-w", "stop"])
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = self.pg_ctl(&["-m", "immediate", "-w", "stop"]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP forwarder whose target can be moved: the stand-in, in the replication drill, for the
/// virtual IP, DNS name or connection pooler that a failover points at the new primary.
pub struct Switch {
    pub port: u16,
    target: std::sync::Arc<
        std::sync::Mutex<(std::net::SocketAddr, tokio_util::sync::CancellationToken)>,
    >,
    stop: tokio_util::sync::CancellationToken,
}

impl Switch {
    pub async fn start(target: std::net::SocketAddr) -> anyhow::Result<Switch> {
        use tokio_util::sync::CancellationToken;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let target = std::sync::Arc::new(std::sync::Mutex::new((target, CancellationToken::new())));
        let stop = CancellationToken::new();
        let (routes, stopped) = (target.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stopped.cancelled() => return,
                };
                let Ok((mut client, _)) = accepted else {
                    continue;
                };
                let (to, cut) = routes.lock().expect("switch lock").clone();
                tokio::spawn(async move {
                    let Ok(mut server) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.cancelled() => {}
                    }
                });
            }
        });
        Ok(Switch { port, target, stop })
    }

    /// New connections go to `to`; the open ones are cut, as a moved address cuts them.
    pub fn point_at(&self, to: std::net::SocketAddr) {
        let mut route = self.target.lock().expect("switch lock");
        route.1.cancel();
        *route = (to, tokio_util::sync::CancellationToken::new());
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        self.stop.cancel();
        self.target.lock().expect("switch lock").1.cancel();
    }
}
pub mod flashclip;
