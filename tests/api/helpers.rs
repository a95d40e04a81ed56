//! The test harness: a real server on a free port, its own PostgreSQL database and its own
//! GridFS database (see `c3s::testkit`), and a real HTTP client.

use secrecy::ExposeSecret;
use std::time::Duration;

use c3s::app::App;
use c3s::config::Config;
use c3s::store::gridfs::FrameStore;
pub use c3s::testkit::{fresh_database, shared_mongodb_url, Secantus};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub const ADMIN_LOGIN: &str = "admin";
pub const ADMIN_PASSWORD: &str = "admin-password";

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    /// The server's own database, for assertions on what is stored.
    pub db: PgPool,
    /// The server's own GridFS bucket, for assertions on what is stored.
    pub frames: FrameStore,
    pub admin_token: String,
    pub config: Config,
    /// `http://host:port` of the metrics listener (in-process servers only).
    pub metrics_base: Option<String>,
    /// Stops the server when the test ends.
    _shutdown: DropCancel,
}

struct DropCancel(CancellationToken);

impl Drop for DropCancel {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(shared_mongodb_url(), |_| {}).await
}

/// A server against the given MongoDB, with settings adjusted by `tweak`.
pub async fn spawn_app_with(mongodb_url: String, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let database_url = fresh_database().await.expect("create a test database");
    let mut config = Config::for_tests(
        database_url,
        mongodb_url,
        format!("c3s_test_{}", Uuid::new_v4().simple()),
    );
    config.bootstrap_admin = Some(format!("{ADMIN_LOGIN}:{ADMIN_PASSWORD}").into());
    config.store_timeout_ms = 2000;
    tweak(&mut config);
    let app = App::build(config.clone()).await.expect("build app");
    let base = format!("http://{}", app.local_addr());
    let metrics_base = app.metrics_addr().map(|a| format!("http://{a}"));
    let db = app.state().db.clone();
    let frames = app.state().frame_store.clone();
    let shutdown = CancellationToken::new();
    tokio::spawn(app.run(shutdown.clone()));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client");
    let mut app = TestApp {
        base,
        client,
        db,
        frames,
        admin_token: String::new(),
        config,
        metrics_base,
        _shutdown: DropCancel(shutdown),
    };
    let (status, body) = app
        .call(
            Method::POST,
            "/api/auth/login",
            None,
            Some(json!({"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "admin login: {body}");
    app.admin_token = body["token"].as_str().expect("token").to_owned();
    app
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The scene's summary (a view of its log, which catches up on its own) once `ready`
    /// says it has; fails after 10 s.
    pub async fn summary_when(
        &self,
        token: &str,
        scene: uuid::Uuid,
        ready: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let (_, summary) = self
                .call(
                    reqwest::Method::GET,
                    &format!("/api/scenes/{scene}/summary"),
                    Some(token),
                    None,
                )
                .await;
            if ready(&summary) {
                return summary;
            }
            assert!(std::time::Instant::now() < deadline, "summary: {summary}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// A JSON call; returns the status and the body parsed as JSON (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request sent");
        let status = resp.status();
        let bytes = resp.bytes().await.expect("body read");
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    /// Registers an account and returns (token, user_id).
    pub async fn register(&self, login: &str) -> (String, Uuid) {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"login": login, "password": "a long password"})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "register {login}: {body}");
        (
            body["token"].as_str().unwrap().to_owned(),
            body["user"]["user_id"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// A guest phone: (device token, user_id).
    pub async fn guest(&self) -> (String, Uuid) {
        let (status, body) = self.call(Method::POST, "/api/auth/guest", None, None).await;
        assert_eq!(status, StatusCode::CREATED, "guest: {body}");
        (
            body["token"].as_str().unwrap().to_owned(),
            body["user"]["user_id"].as_str().unwrap().parse().unwrap(),
        )
    }

    /// Creates a 100 × 50 scene as `token` and returns its id.
    pub async fn create_scene(&self, token: &str, name: &str) -> Uuid {
        self.create_scene_sized(token, name, 100.0, 50.0).await
    }

    /// Creates a `width` × `height` scene as `token` and returns its id.
    pub async fn create_scene_sized(
        &self,
        token: &str,
        name: &str,
        width: f64,
        height: f64,
    ) -> Uuid {
        let (status, body) = self
            .call(
                Method::POST,
                "/api/scenes",
                Some(token),
                Some(json!({"name": name, "width": width, "height": height})),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "create scene: {body}");
        body["scene_id"].as_str().unwrap().parse().unwrap()
    }

    /// Opens a scene for phones.
    pub async fn open_scene(&self, token: &str, scene_id: Uuid) {
        let (status, body) = self
            .call(
                Method::PATCH,
                &format!("/api/scenes/{scene_id}"),
                Some(token),
                Some(json!({"status": "open"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "open scene: {body}");
    }

    /// Builds the scene's show from all its frames, in order.
    pub async fn build_show(&self, token: &str, scene_id: Uuid, looped: bool) {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/api/scenes/{scene_id}/show"),
                Some(token),
                Some(json!({"loop": looped})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "build the show: {body}");
    }

    /// Places a pixel at (x, y), as an observer's tap does.
    pub async fn place(&self, token: &str, scene_id: Uuid, pixel_id: Uuid, x: f64, y: f64) {
        let (status, body) = self
            .call(
                Method::PUT,
                &format!("/api/scenes/{scene_id}/pixels/{pixel_id}/position"),
                Some(token),
                Some(json!({"x": x, "y": y})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "place a pixel: {body}");
    }

    /// Uploads raw bytes as a frame; returns status and JSON body.
    pub async fn upload(
        &self,
        token: &str,
        scene_id: Uuid,
        content_type: &str,
        bytes: Vec<u8>,
        query: &str,
    ) -> (StatusCode, Value) {
        self.post_bytes(
            token,
            &format!("/api/scenes/{scene_id}/frames{query}"),
            content_type,
            bytes,
        )
        .await
    }

    /// Posts raw bytes (an upload's body) to `path`; returns status and JSON body.
    pub async fn post_bytes(
        &self,
        token: &str,
        path: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", content_type)
            .body(bytes)
            .send()
            .await
            .expect("upload sent");
        let status = resp.status();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Rows in `frame` and files in the bucket: what "storage unchanged" compares.
    pub async fn storage_counts(&self) -> (i64, usize) {
        let rows: i64 = sqlx::query_scalar("select count(*) from frame")
            .fetch_one(&self.db)
            .await
            .unwrap();
        let files = self.frames.list().await.expect("list gridfs").len();
        (rows, files)
    }
}

/// A `c3s` server in its own process (the real binary), on a port of its own. Killed with
/// SIGKILL, by its PID, when dropped or when [`Node::kill`] is called.
pub struct Node {
    /// A client of this node (its `db` and `frames` are the shared stores).
    pub app: TestApp,
    child: std::process::Child,
}

impl Node {
    /// Starts a node on the same stores as `config` (its database, MongoDB, GridFS database)
    /// and waits until it answers; logs in the bootstrap admin.
    pub async fn start(config: &Config) -> Node {
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
            probe.local_addr().unwrap().port()
        };
        let child = std::process::Command::new("setpriv")
            .args(["--pdeathsig", "KILL", "--"])
            .arg(env!("CARGO_BIN_EXE_c3s"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("C3S_LISTEN", format!("127.0.0.1:{port}"))
            .env("DATABASE_URL", config.database_url.expose_secret())
            .env("MONGODB_URL", config.mongodb_url.expose_secret())
            .env("C3S_MONGODB_DATABASE", &config.mongodb_database)
            .env("C3S_STORE_TIMEOUT_MS", config.store_timeout_ms.to_string())
            .env("C3S_TICK_MS", config.tick_ms.to_string())
            .env("C3S_LOOKAHEAD_MS", config.lookahead_ms.to_string())
            .env(
                "C3S_BOOTSTRAP_ADMIN",
                format!("{ADMIN_LOGIN}:{ADMIN_PASSWORD}"),
            )
            .env("RUST_LOG", "warn")
            .env("C3S_METRICS_LISTEN", "none")
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("start the c3s binary");
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("client");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let up = client.get(format!("{base}/healthz")).send().await;
            if up.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "node on port {port} did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let db = sqlx::PgPool::connect(config.database_url.expose_secret())
            .await
            .expect("connect to the node's database");
        let frames = FrameStore::connect(config).await.expect("gridfs client");
        let mut app = TestApp {
            base,
            client,
            db,
            frames,
            admin_token: String::new(),
            config: config.clone(),
            metrics_base: None,
            _shutdown: DropCancel(CancellationToken::new()),
        };
        let (status, body) = app
            .call(
                Method::POST,
                "/api/auth/login",
                None,
                Some(json!({"login": ADMIN_LOGIN, "password": ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "admin login: {body}");
        app.admin_token = body["token"].as_str().expect("token").to_owned();
        Node { app, child }
    }

    /// SIGKILL: the process gets no chance to close anything.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings for nodes sharing a fresh database and the shared GridFS store.
/// Waits until `n` nodes of the deployment have said they are up (heartbeats every 2 s).
pub async fn until_nodes(app: &TestApp, n: i64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sqlx::query_scalar::<_, i64>("select count(*) from node")
        .fetch_one(&app.db)
        .await
        .unwrap()
        < n
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the nodes never said they are up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

pub async fn node_config() -> Config {
    let database_url = fresh_database().await.expect("create a test database");
    let mut config = Config::for_tests(
        database_url,
        shared_mongodb_url(),
        format!("c3s_test_{}", Uuid::new_v4().simple()),
    );
    config.store_timeout_ms = 2000;
    config
}
