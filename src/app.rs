//! The application: shared state, building it (connecting stores, migrating, binding the
//! listener) and running it until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::serve::ListenerExt;
use secrecy::ExposeSecret;
use sqlx::PgPool;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::auth::{self, Grant, Permission};
use crate::commands::{placements::Placements, Commands};
use crate::config::Config;
use crate::dataplane::follower::Follower;
use crate::dataplane::framecache::FrameCache;
use crate::dataplane::hub::Hub;
use crate::dataplane::scheduler::{Scheduler, SchedulerConfig, Waker};
use crate::nodes::Signals;
use crate::store::{self, gridfs::FrameStore};

/// What every handler can reach. Cheap to clone: pools and `Arc`s.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub db: PgPool,
    /// The phones' pool for joins (`db_phone_connections`), apart from the API's.
    pub phone_db: PgPool,
    /// Phones waiting to join, and the writer that joins them in batches.
    pub joins: Arc<crate::ws::joins::Joins>,
    pub frame_store: FrameStore,
    /// Bounds uploads decoded at once (each may hold `max_upload_bytes` in memory).
    pub upload_slots: Arc<Semaphore>,
    /// MiB of decode memory (`decode_memory_mb`), taken by each image decode for its need.
    pub decode_memory: Arc<Semaphore>,
    /// Bounds observers' clips read at once (each uses every core and up to
    /// `video_decoded_mb`).
    pub video_slots: Arc<Semaphore>,
    /// Cancelled when the server shuts down; long-lived tasks watch it.
    pub shutdown: CancellationToken,
    /// This node's phones and the snapshots their colours come from.
    pub hub: Arc<Hub>,
    pub frame_cache: Arc<FrameCache>,
    /// Wakes the scheduler thread early (a phone joined, a show changed).
    pub scheduler: Waker,
    /// Applies the scene log to the hub.
    pub follower: Arc<Follower>,
    /// The one path for scene commands.
    pub commands: Commands,
    /// The one placement path (batched per scene).
    pub placements: Arc<Placements>,
    /// Signals to single phones, on whichever node holds them.
    pub signals: Arc<Signals>,
    /// Signs QR tokens; the same on every node (stored in PostgreSQL).
    pub secret: Arc<[u8]>,
    /// This process among the nodes (random at each start).
    pub node_id: uuid::Uuid,
    pub search_cache: Arc<crate::search::SearchCache>,
    /// Built iCalendar feeds (anonymous, polled by calendar apps).
    pub ics_cache: Arc<crate::search::FeedCache>,
    /// Each scene's presence, counted once a second for all the pages watching it.
    pub presence_cache: Arc<crate::nodes::PresenceCache>,
    /// Bounds password hashing (logins, registrations): a crowd of logins gets 429s, not
    /// gigabytes of argon2 memory and a slow `/healthz`.
    pub passwords: Arc<crate::budget::WorkQueue>,
    /// Requests per minute per client address or account.
    pub rate_limits: Arc<crate::budget::RateLimits>,
    /// Each scene's allowance of placements from its phones (seat, GPS) on this node.
    pub phone_writes: Arc<dashmap::DashMap<uuid::Uuid, std::sync::Mutex<crate::budget::Bucket>>>,
    /// Sockets per client address that have not said hello yet.
    pub pending_sockets: Arc<dashmap::DashMap<std::net::IpAddr, u32>>,
    /// Sound sessions phones report in, read once per node (a session never changes).
    pub sound_sessions: Arc<crate::ws::sound::SessionCache>,
}

pub struct App {
    listener: TcpListener,
    metrics: Option<TcpListener>,
    state: AppState,
}

impl App {
    /// Connects the stores, applies migrations, creates the bootstrap admin if asked, and
    /// binds the listener (port 0 picks a free one: see [`App::local_addr`]).
    pub async fn build(config: Config) -> anyhow::Result<App> {
        let db = store::connect_pg(&config)?;
        let phone_db = store::connect_phone_pg(&config)?;
        store::MIGRATOR
            .run(&db)
            .await
            .context("applying database migrations")?;
        let secret: Arc<[u8]> = store::locate::server_secret(&db)
            .await
            .context("reading the signing secret")?
            .into();
        let frame_store = FrameStore::connect(&config)
            .await
            .context("configuring the GridFS client")?;
        if let Some(spec) = &config.bootstrap_admin {
            bootstrap_admin(&db, spec.expose_secret()).await?;
        }
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("binding {}", config.listen))?;
        let shutdown = CancellationToken::new();
        let scheduler_config = SchedulerConfig {
            tick_ms: config.tick_ms.max(10),
            lookahead_ms: config.lookahead_ms.max(0),
            window_ms: config.window_ms.max(config.tick_ms.max(10)),
        };
        let hub = Arc::new(Hub::new(scheduler_config.groups()));
        let frame_cache = Arc::new(FrameCache::with_clips(
            Arc::new(frame_store.clone()),
            config.frame_cache_mb * 1024 * 1024,
            config.clip_settings(),
        ));
        let scheduler = Scheduler::spawn(
            hub.clone(),
            frame_cache.clone(),
            scheduler_config,
            shutdown.clone(),
        );
        let follower = Arc::new(Follower::new(
            Arc::new(store::log::PgLog(db.clone())),
            hub.clone(),
            frame_cache.clone(),
            scheduler.clone(),
        ));
        let commands = Commands::new(db.clone(), follower.clone());
        let node_id = uuid::Uuid::new_v4();
        let search_cache = Arc::new(crate::search::SearchCache::new(
            config.search_cache_mb << 20,
        ));
        let passwords = Arc::new(config.password_queue());
        let ics_cache = Arc::new(crate::search::FeedCache::new(config.ics_cache_mb << 20));
        let rate_limits = Arc::new(config.rate_limits());
        let joins = Arc::new(crate::ws::joins::Joins::start(
            phone_db.clone(),
            config.join_queue,
            config.join_batch,
            config.device_ttl_days,
        ));
        let state = AppState {
            upload_slots: Arc::new(Semaphore::new(config.upload_concurrency.max(1))),
            decode_memory: Arc::new(Semaphore::new(
                config.decode_memory_mb.clamp(1, u64::from(u32::MAX >> 4)) as usize,
            )),
            video_slots: Arc::new(Semaphore::new(config.video_concurrency.max(1))),
            config: Arc::new(config),
            placements: Placements::new(commands.clone()),
            signals: Signals::new(db.clone(), hub.clone(), node_id, secret.clone()),
            commands,
            follower,
            db,
            joins,
            phone_db,
            frame_store,
            shutdown,
            hub,
            frame_cache,
            scheduler,
            secret,
            node_id,
            search_cache,
            ics_cache,
            presence_cache: Arc::default(),
            passwords,
            rate_limits,
            pending_sockets: Arc::default(),
            phone_writes: Arc::default(),
            sound_sessions: Arc::default(),
        };
        tokio::spawn(sweep_orphans(state.clone()));
        tokio::spawn(forget_idle(state.clone()));
        let (heard_tx, heard) = tokio::sync::mpsc::channel(crate::nodes::HEARD_CAPACITY);
        tokio::spawn(store::listen::run(
            state.db.clone(),
            heard_tx,
            state.shutdown.clone(),
        ));
        let views_wake = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(crate::nodes::follow(
            state.follower.clone(),
            state.signals.clone(),
            heard,
            views_wake.clone(),
            state.shutdown.clone(),
        ));
        tokio::spawn(crate::nodes::report(
            state.db.clone(),
            state.node_id,
            state.hub.clone(),
            state.frame_cache.clone(),
            state.shutdown.clone(),
        ));
        tokio::spawn(crate::views::Consumer::new(crate::views::Summary).run(
            state.db.clone(),
            views_wake,
            state.shutdown.clone(),
        ));
        let metrics = crate::telemetry::bind(state.config.metrics_listen.0).await;
        Ok(App {
            listener,
            metrics,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Where `GET /metrics` is served, when it is.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        crate::telemetry::local_addr(&self.metrics)
    }

    /// Serves until `shutdown` is cancelled, then lets in-flight requests finish.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let state = self.state.clone();
        let router = crate::http::router(self.state);
        tracing::info!(addr = %self.listener.local_addr()?, "c3s listening");
        if let Some(metrics) = self.metrics {
            tracing::info!(addr = ?metrics.local_addr().ok(), "metrics at /metrics");
            tokio::spawn(crate::telemetry::serve(metrics, state.shutdown.clone()));
        }
        let stop = shutdown.clone();
        let shutdown_all = state.shutdown.clone();
        let hub = state.hub.clone();
        let send_buffer = state.config.socket_send_buffer;
        let listener = self.listener.tap_io(move |tcp| {
            // clock-sync replies are tiny and must not wait for Nagle's algorithm
            let _ = tcp.set_nodelay(true);
            if send_buffer > 0 {
                let _ = socket2::SockRef::from(&*tcp).set_send_buffer_size(send_buffer);
            }
        });
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            stop.cancelled().await;
            // sockets end on this, so the server's graceful shutdown does not wait for them
            // (phones in the hub are closed through it: a phone's session waits on its own
            // token only, not on one shared by the whole crowd)
            shutdown_all.cancel();
            hub.close_all(crate::dataplane::protocol::CloseReason::ShuttingDown);
        })
        .await
        .context("serving")?;
        state.shutdown.cancel();
        let _ = store::nodes::forget_node(&state.db, state.node_id).await;
        state.db.close().await;
        Ok(())
    }
}

/// Unreferenced GridFS files younger than this are left alone: they may belong to an upload
/// whose rows are not written yet.
const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Forgets, once a minute, the clients the rate limits no longer need to remember and the
/// scenes that have had no phones for `idle_scene_s`.
async fn forget_idle(state: AppState) {
    let mut every = tokio::time::interval(std::time::Duration::from_secs(60));
    let idle = std::time::Duration::from_secs(state.config.idle_scene_s);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        state.rate_limits.forget_idle();
        let freed = state.hub.free_idle(idle);
        state
            .phone_writes
            .retain(|id, _| state.hub.scene(*id).is_some());
        if freed > 0 {
            tracing::info!(freed, "idle scenes freed");
        }
    }
}

/// How often frame bytes that lost their row are looked for.
const ORPHAN_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes frame bytes that lost their row (see `store::sweep_orphan_frames`): at start-up and
/// then every hour, in the background; a store that is down only delays it.
async fn sweep_orphans(state: AppState) {
    let mut every = tokio::time::interval(ORPHAN_SWEEP_EVERY);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            _ = state.shutdown.cancelled() => return,
        }
        match store::sweep_orphan_frames(&state.db, &state.frame_store, ORPHAN_GRACE).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "removed orphaned frame bytes"),
            Err(e) => tracing::warn!(error = ?e, "orphan sweep skipped"),
        }
    }
}

/// Creates the admin named by `login:password`, or re-grants an existing account when the
/// password is its own.
async fn bootstrap_admin(db: &PgPool, spec: &str) -> anyhow::Result<()> {
    let (login, password) = spec
        .split_once(':')
        .context("C3S_BOOTSTRAP_ADMIN is login:password")?;
    let login = auth::parse_login(login).map_err(|e| anyhow::anyhow!("{e}"))?;
    // an existing account becomes admin only by its own password: anybody may have
    // registered the login before this start (or while this node hashed the password)
    let existing = |user: store::users::UserRow| {
        let (password, login) = (password.to_owned(), login.clone());
        async move {
            let admin = store::users::grants_of(db, user.user_id)
                .await?
                .iter()
                .any(|g| g.permission == Permission::Admin && g.scene_id.is_none());
            if admin {
                // already the admin (its password may have changed since): nothing to grant
                return Ok(user);
            }
            let stored = user.password_hash.clone();
            let same = tokio::task::spawn_blocking(move || {
                auth::verify_password(&password, stored.as_deref())
            })
            .await?;
            anyhow::ensure!(
                same,
                "C3S_BOOTSTRAP_ADMIN names the existing account '{login}' with another password: \
                 refusing to make it admin (choose another login, or give that account's password)"
            );
            Ok::<_, anyhow::Error>(user)
        }
    };
    let user = match store::users::user_by_login(db, &login).await? {
        Some(user) => existing(user).await?,
        None => {
            let password = password.to_owned();
            let hash = tokio::task::spawn_blocking(move || auth::hash_password(&password))
                .await?
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            let mut tx = db.begin().await?;
            match store::users::insert_user(&mut tx, Some(&login), &login, Some(&hash)).await {
                Ok(user) => {
                    tx.commit().await?;
                    tracing::info!(%login, "bootstrap admin created");
                    user
                }
                // several nodes starting at once: another one created it first
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                    drop(tx);
                    let user = store::users::user_by_login(db, &login)
                        .await?
                        .context("the bootstrap admin vanished")?;
                    existing(user).await?
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    let admin = Grant {
        permission: Permission::Admin,
        scene_id: None,
    };
    store::users::grant(db, user.user_id, &admin, None).await?;
    Ok(())
}
