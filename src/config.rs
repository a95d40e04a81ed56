//! Server settings: one clap struct, every field settable by flag or environment variable.
//!
//! The README's "Settings" table is written from this file; keep them together.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use secrecy::{ExposeSecret, SecretString};

/// Everything the server needs to start. Secrets (the database URLs, which may carry
/// passwords, and the bootstrap admin's password) are [`SecretString`]s: redacted in `Debug`,
/// so the start-up log line that prints the config never leaks them, and read only with
/// `expose_secret()` where they are used.
#[derive(Clone, Parser)]
#[command(name = "c3s", version, about = "Cloud Scene Screen Service")]
pub struct Config {
    /// Address the public HTTP + WebSocket listener binds.
    #[arg(long, env = "C3S_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// PostgreSQL connection URL (users, permissions, scenes, frame metadata).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/c3s",
        value_parser = secret
    )]
    pub database_url: SecretString,

    /// Most PostgreSQL connections this node keeps open.
    #[arg(long, env = "C3S_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// PostgreSQL connections kept for phones joining over the socket, apart from the
    /// others, so the HTTP API's load never refuses a phone.
    #[arg(long, env = "C3S_DB_PHONE_CONNECTIONS", default_value_t = 4)]
    pub db_phone_connections: u32,

    /// Phones that may wait to join on this node at once; past it a phone is told to come
    /// back later (4005). Waiting phones hold only their socket.
    #[arg(long, env = "C3S_JOIN_QUEUE", default_value_t = 50_000)]
    pub join_queue: usize,

    /// Most joins written in one batch (one transaction).
    #[arg(long, env = "C3S_JOIN_BATCH", default_value_t = 1000)]
    pub join_batch: usize,

    /// MongoDB connection string for the GridFS frame store. For a replica set include
    /// `replicaSet=...`; C3S writes frames with majority write concern.
    #[arg(long, env = "MONGODB_URL", default_value = "mongodb://127.0.0.1:27017", value_parser = secret)]
    pub mongodb_url: SecretString,

    /// MongoDB database holding the GridFS bucket.
    #[arg(long, env = "C3S_MONGODB_DATABASE", default_value = "c3s")]
    pub mongodb_database: String,

    /// GridFS bucket name: one per deployment, so two deployments can share a MongoDB.
    #[arg(long, env = "C3S_GRIDFS_BUCKET", default_value = "frames")]
    pub gridfs_bucket: String,

    /// How long a storage call may wait for its database before the request gets 503.
    /// Short on purpose: an operator minutes before a show needs a fast, clear answer.
    #[arg(long, env = "C3S_STORE_TIMEOUT_MS", default_value_t = 5000)]
    pub store_timeout_ms: u64,

    /// Directory of the web client served at `/`.
    #[arg(long, env = "C3S_WEB_ROOT", default_value = "web-client")]
    pub web_root: PathBuf,

    /// Largest accepted frame upload, in bytes.
    #[arg(long, env = "C3S_MAX_UPLOAD_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub max_upload_bytes: u64,

    /// Largest accepted frame, in pixels (width × height). Refused from the header, before
    /// any pixel buffer is allocated.
    #[arg(long, env = "C3S_MAX_FRAME_PIXELS", default_value_t = 40_000_000)]
    pub max_frame_pixels: u64,

    /// Shortest a frame may be shown, in ms (60 Hz screens show a frame at least 16 ms).
    #[arg(long, env = "C3S_MIN_FRAME_MS", default_value_t = 16)]
    pub min_frame_ms: u32,

    /// Most frames one animated upload may split into.
    #[arg(long, env = "C3S_MAX_ANIMATION_FRAMES", default_value_t = 1000)]
    pub max_animation_frames: usize,

    /// Pixels all the frames of one animated upload may decode to, together (a 6000 × 6000
    /// GIF of 300 frames is 10 800 000 000); each is decoded and encoded one at a time.
    #[arg(long, env = "C3S_MAX_ANIMATION_PIXELS", default_value_t = 100_000_000)]
    pub max_animation_pixels: u64,

    /// Slowest a request body may arrive, on average, once `body_rate_grace_ms` have passed
    /// (0: no minimum).
    #[arg(long, env = "C3S_MIN_BODY_BYTES_PER_S", default_value_t = 16 * 1024)]
    pub min_body_bytes_per_s: u64,

    /// How long a body may arrive at any rate before the minimum applies (an upload over a
    /// congested network starts slowly), in ms.
    #[arg(long, env = "C3S_BODY_RATE_GRACE_MS", default_value_t = 10_000)]
    pub body_rate_grace_ms: u64,

    /// Memory all image decodes of this node may hold at once, in MiB (each decode's need is
    /// estimated from its header: a 6000 × 6000 GIF needs about 410).
    #[arg(long, env = "C3S_DECODE_MEMORY_MB", default_value_t = 1024)]
    pub decode_memory_mb: u64,

    /// Uploads decoded at the same time; each may hold up to `max_upload_bytes` in memory.
    #[arg(long, env = "C3S_UPLOAD_CONCURRENCY", default_value_t = 4)]
    pub upload_concurrency: usize,

    /// Largest observer's clip (flash locating), in bytes; streamed to a temporary file.
    #[arg(long, env = "C3S_MAX_VIDEO_BYTES", default_value_t = 512 * 1024 * 1024)]
    pub max_video_bytes: u64,

    /// Longest observer's clip, in seconds (a flash session lasts about 4 s).
    #[arg(long, env = "C3S_MAX_VIDEO_SECONDS", default_value_t = 20.0)]
    pub max_video_seconds: f64,

    /// Largest observer's clip frame, in pixels (4096 × 2304: 4K with room).
    #[arg(long, env = "C3S_MAX_VIDEO_PIXELS", default_value_t = 4096 * 2304)]
    pub max_video_pixels: u64,

    /// Frames above this rate are dropped evenly when a clip is read (slow motion).
    #[arg(long, env = "C3S_MAX_VIDEO_FPS", default_value_t = 60.0)]
    pub max_video_fps: f64,

    /// Memory the decoded frames of one clip may take, in MiB (a 5 s 4K clip takes ~330).
    #[arg(long, env = "C3S_VIDEO_DECODED_MB", default_value_t = 1200)]
    pub video_decoded_mb: u64,

    /// Address space the FFmpeg decoder process may use, in MiB.
    #[arg(long, env = "C3S_VIDEO_DECODER_MB", default_value_t = 1536)]
    pub video_decoder_mb: u64,

    /// How long reading one clip may take (probe, decode, analysis), in seconds.
    #[arg(long, env = "C3S_VIDEO_TIMEOUT_S", default_value_t = 120)]
    pub video_timeout_s: u64,

    /// Clips read at once (each uses every core and up to the decoded-memory limit).
    #[arg(long, env = "C3S_VIDEO_CONCURRENCY", default_value_t = 1)]
    pub video_concurrency: usize,

    /// Largest show clip (a video an operator uploads), in bytes; streamed to GridFS and to a
    /// local file, never held in memory.
    #[arg(long, env = "C3S_MAX_CLIP_BYTES", default_value_t = 2 * 1024 * 1024 * 1024)]
    pub max_clip_bytes: u64,

    /// Longest show clip, in seconds.
    #[arg(long, env = "C3S_MAX_CLIP_SECONDS", default_value_t = 600.0)]
    pub max_clip_seconds: f64,

    /// Largest show clip frame, in pixels (4096 × 2304: 4K with room).
    #[arg(long, env = "C3S_MAX_CLIP_PIXELS", default_value_t = 4096 * 2304)]
    pub max_clip_pixels: u64,

    /// How long an upload of a clip may take, in seconds (other requests have 120 s).
    #[arg(long, env = "C3S_CLIP_UPLOAD_TIMEOUT_S", default_value_t = 1800)]
    pub clip_upload_timeout_s: u64,

    /// Address space of each FFmpeg process playing a clip, in MiB.
    #[arg(long, env = "C3S_CLIP_DECODER_MB", default_value_t = 1536)]
    pub clip_decoder_mb: u64,

    /// Clip decoders running at once on a node (each a process with two threads).
    #[arg(long, env = "C3S_CLIP_DECODERS", default_value_t = 2)]
    pub clip_decoders: usize,

    /// How far ahead of the phones a clip is decoded, in seconds of show (at most a third of
    /// the frame cache is used for it).
    #[arg(long, env = "C3S_CLIP_AHEAD_S", default_value_t = 8)]
    pub clip_ahead_s: u32,

    /// Where a node keeps local copies of the clips it plays (default: a directory in the
    /// system's temporary directory).
    #[arg(long, env = "C3S_CLIP_SPOOL_DIR")]
    pub clip_spool_dir: Option<std::path::PathBuf>,

    /// Disk the local copies of clips may take, in MiB (least recently used removed first).
    #[arg(long, env = "C3S_CLIP_SPOOL_MB", default_value_t = 8192)]
    pub clip_spool_mb: u64,

    /// How long after a flash session ends its clip may still be sent, in minutes.
    #[arg(long, env = "C3S_FLASH_SESSION_TTL_MINUTES", default_value_t = 30)]
    pub flash_session_ttl_minutes: i64,

    /// How long after a sound session's recording ends its phones may report, in seconds.
    #[arg(long, env = "C3S_SOUND_REPORT_TTL_S", default_value_t = 120)]
    pub sound_report_ttl_s: u64,

    /// A sound fit leaving more than this (RMS, ms) is refused: some delay was not the direct
    /// sound (1 ms is 34 cm of path).
    #[arg(long, env = "C3S_SOUND_MAX_RESIDUAL_MS", default_value_t = 1.0)]
    pub sound_max_residual_ms: f64,

    /// A sound fit whose position is more uncertain than this (m, one standard deviation,
    /// from the beacons' geometry) is refused.
    #[arg(long, env = "C3S_SOUND_MAX_UNCERTAINTY_M", default_value_t = 0.75)]
    pub sound_max_uncertainty_m: f64,

    /// Lifetime of a login session token, in hours.
    #[arg(long, env = "C3S_SESSION_TTL_HOURS", default_value_t = 24)]
    pub session_ttl_hours: i64,

    /// Lifetime of a phone's device token, in days.
    #[arg(long, env = "C3S_DEVICE_TTL_DAYS", default_value_t = 30)]
    pub device_ttl_days: i64,

    /// How often the scheduler builds and sends each phone's next window of colours, in ms.
    #[arg(long, env = "C3S_TICK_MS", default_value_t = 500)]
    pub tick_ms: i64,

    /// How far ahead of their instant colours reach the phones, in ms: network jitter and
    /// drops shorter than this never show on screen.
    #[arg(long, env = "C3S_LOOKAHEAD_MS", default_value_t = 1500)]
    pub lookahead_ms: i64,

    /// How much show each message to a phone carries once a show version has held for 10 s,
    /// in ms (a multiple of the tick; right after a new version, one tick's worth). Longer
    /// windows mean fewer sends per phone; the scene's phones are spread over
    /// window / tick groups that are sent on different ticks.
    #[arg(long, env = "C3S_WINDOW_MS", default_value_t = 4000)]
    pub window_ms: i64,

    /// Messages queued per phone before it counts as too slow and is dropped.
    #[arg(long, env = "C3S_WS_QUEUE", default_value_t = crate::dataplane::hub::CONN_QUEUE_CAPACITY)]
    pub ws_queue_capacity: usize,

    /// Kernel send buffer of each accepted socket, in bytes (0: the system's autotuning).
    /// Small values make a phone that stops reading show up as slow sooner.
    #[arg(long, env = "C3S_SOCKET_SEND_BUFFER", default_value_t = 0)]
    pub socket_send_buffer: usize,

    /// Memory for decoded, resampled frames, in MiB.
    #[arg(long, env = "C3S_FRAME_CACHE_MB", default_value_t = 256)]
    pub frame_cache_mb: u64,

    /// Seat and GPS attempts one phone may make per minute (after a burst of 5); more are
    /// answered "too many attempts", not placed.
    #[arg(long, env = "C3S_PHONE_LOCATE_PER_MIN", default_value_t = 12)]
    pub phone_locate_per_min: u32,

    /// Addresses of the reverse proxies in front of this node, comma-separated: only from
    /// these are `X-Forwarded-For` and `X-Forwarded-Proto` believed. None by default.
    #[arg(long, env = "C3S_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// Logins and registrations per minute from one client address (0: no limit).
    #[arg(long, env = "C3S_LOGINS_PER_MIN", default_value_t = 30)]
    pub logins_per_min: u32,

    /// Guest identities (`POST /api/auth/guest`) per minute from one address; high, because a
    /// stadium's phones may share one address (0: no limit).
    #[arg(long, env = "C3S_GUESTS_PER_MIN", default_value_t = 600)]
    pub guests_per_min: u32,

    /// Searches per minute from one address (0: no limit).
    #[arg(long, env = "C3S_SEARCHES_PER_MIN", default_value_t = 300)]
    pub searches_per_min: u32,

    /// Uploads (frames, seat maps, clips) per minute by one account (0: no limit).
    #[arg(long, env = "C3S_UPLOADS_PER_MIN", default_value_t = 120)]
    pub uploads_per_min: u32,

    /// Sockets from one address that have not said hello yet; more are refused with 429
    /// before the upgrade (a crowd behind one address says hello at once, a flood never).
    #[arg(long, env = "C3S_PENDING_SOCKETS_PER_ADDRESS", default_value_t = 256)]
    pub pending_sockets_per_address: u32,

    /// A scene with no phone on this node for this long is freed from memory (with its
    /// metrics), in seconds; it is loaded again from its log when asked for.
    #[arg(long, env = "C3S_IDLE_SCENE_S", default_value_t = 600)]
    pub idle_scene_s: u64,

    /// Placements (seat, GPS) a scene's phones may write per second on one node, after a
    /// burst of ten seconds' worth: a crowd typing its seats fits, a flood of new phones does
    /// not grow the scene's log without bound (0: no limit).
    #[arg(long, env = "C3S_SCENE_PHONE_WRITES_PER_S", default_value_t = 500)]
    pub scene_phone_writes_per_s: u32,

    /// Memory for cached search results, in MiB (weighed by their JSON size).
    #[arg(long, env = "C3S_SEARCH_CACHE_MB", default_value_t = 32)]
    pub search_cache_mb: u64,

    /// Memory for built iCalendar feeds, in MiB.
    #[arg(long, env = "C3S_ICS_CACHE_MB", default_value_t = 16)]
    pub ics_cache_mb: u64,

    /// Password hashes computed at once (each takes ~19 MiB and a core for ~50 ms); 0: one
    /// per core.
    #[arg(long, env = "C3S_PASSWORD_WORKERS", default_value_t = 0)]
    pub password_workers: usize,

    /// Logins and registrations that may wait for a hashing slot; beyond them the answer is
    /// 429 with `Retry-After`.
    #[arg(long, env = "C3S_PASSWORD_QUEUE", default_value_t = 32)]
    pub password_queue: usize,

    /// Create this admin account at start-up when it does not exist (`login:password`).
    #[arg(long, env = "C3S_BOOTSTRAP_ADMIN", value_parser = secret)]
    pub bootstrap_admin: Option<SecretString>,

    /// The address phones use to reach this server (`http://192.168.1.20:8080`), for the join
    /// QR code; by default it is taken from each request's `Host`.
    #[arg(long, env = "C3S_PUBLIC_URL")]
    pub public_url: Option<String>,

    /// Where Prometheus scrapes `GET /metrics`: a listener of its own, never the public one
    /// (`none` to turn it off).
    #[arg(long, env = "C3S_METRICS_LISTEN", default_value = "127.0.0.1:9464", value_parser = parse_optional_addr)]
    pub metrics_listen: MaybeAddr,

    /// Web origins allowed to call the API from a browser (CORS), comma-separated
    /// (`https://club.example,https://tickets.example`; `*` for any). None by default.
    #[arg(long, env = "C3S_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Log as JSON lines instead of human-readable text.
    #[arg(long, env = "C3S_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

impl Config {
    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    /// What one observer's clip may be and cost to read.
    pub fn video_limits(&self) -> crate::locate::flash::video::VideoLimits {
        crate::locate::flash::video::VideoLimits {
            max_seconds: self.max_video_seconds,
            max_pixels: self.max_video_pixels,
            max_fps: self.max_video_fps,
            max_decoded_bytes: self.video_decoded_mb << 20,
            timeout: Duration::from_secs(self.video_timeout_s.max(1)),
            decoder_memory_bytes: self.video_decoder_mb << 20,
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }

    /// What a show clip may be, and what reading it may cost.
    pub fn clip_limits(&self) -> crate::clips::ClipLimits {
        crate::clips::ClipLimits {
            max_bytes: self.max_clip_bytes,
            // a show entry lasts at most an hour (the frame table's check)
            max_seconds: self.max_clip_seconds.min(3600.0),
            max_pixels: self.max_clip_pixels,
            timeout: Duration::from_secs(self.video_timeout_s.max(1)),
            decoder_memory_bytes: self.clip_decoder_mb << 20,
            threads: 2,
        }
    }

    /// How this node plays clips.
    pub fn clip_settings(&self) -> crate::dataplane::clips::ClipSettings {
        let spool = self
            .clip_spool_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("c3s-clips"));
        crate::dataplane::clips::ClipSettings {
            spool,
            spool_bytes: self.clip_spool_mb << 20,
            limits: self.clip_limits(),
            max_decoders: self.clip_decoders.max(1),
            ahead_s: self.clip_ahead_s.clamp(1, 60),
        }
    }

    /// The password-hashing queue these settings describe.
    pub fn password_queue(&self) -> crate::budget::WorkQueue {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let workers = match self.password_workers {
            0 => cores,
            n => n,
        };
        crate::budget::WorkQueue::new("password checking is busy", workers, self.password_queue)
    }

    /// The per-client request limits these settings describe.
    pub fn rate_limits(&self) -> crate::budget::RateLimits {
        use crate::budget::Limiter;
        crate::budget::RateLimits {
            logins: Limiter::per_minute(
                "too many logins and registrations from this address",
                self.logins_per_min,
            ),
            guests: Limiter::per_minute(
                "too many guest identities from this address",
                self.guests_per_min,
            ),
            searches: Limiter::per_minute(
                "too many searches from this address",
                self.searches_per_min,
            ),
            uploads: Limiter::per_minute("too many uploads by this account", self.uploads_per_min),
        }
    }

    /// Settings for a test or tool that builds a server in process.
    pub fn for_tests(database_url: String, mongodb_url: String, mongodb_database: String) -> Self {
        let mut config = Config::parse_from(["c3s"]);
        config.listen = "127.0.0.1:0".parse().expect("literal address");
        config.database_url = database_url.into();
        config.mongodb_url = mongodb_url.into();
        config.mongodb_database = mongodb_database;
        config.web_root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web-client");
        config.metrics_listen = MaybeAddr(Some("127.0.0.1:0".parse().expect("literal address")));
        // every test client is one loopback address: the tests of the limits turn them on
        config.logins_per_min = 0;
        config.guests_per_min = 0;
        config.searches_per_min = 0;
        config.uploads_per_min = 0;
        config
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field(
                "database_url",
                &redact_url(self.database_url.expose_secret()),
            )
            .field("db_max_connections", &self.db_max_connections)
            .field("db_phone_connections", &self.db_phone_connections)
            .field("join_queue", &self.join_queue)
            .field("join_batch", &self.join_batch)
            .field("mongodb_url", &redact_url(self.mongodb_url.expose_secret()))
            .field("mongodb_database", &self.mongodb_database)
            .field("gridfs_bucket", &self.gridfs_bucket)
            .field("store_timeout_ms", &self.store_timeout_ms)
            .field("web_root", &self.web_root)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_frame_pixels", &self.max_frame_pixels)
            .field("min_frame_ms", &self.min_frame_ms)
            .field("max_animation_frames", &self.max_animation_frames)
            .field("max_animation_pixels", &self.max_animation_pixels)
            .field("min_body_bytes_per_s", &self.min_body_bytes_per_s)
            .field("body_rate_grace_ms", &self.body_rate_grace_ms)
            .field("upload_concurrency", &self.upload_concurrency)
            .field("decode_memory_mb", &self.decode_memory_mb)
            .field("max_video_bytes", &self.max_video_bytes)
            .field("max_video_seconds", &self.max_video_seconds)
            .field("max_video_pixels", &self.max_video_pixels)
            .field("max_video_fps", &self.max_video_fps)
            .field("video_decoded_mb", &self.video_decoded_mb)
            .field("video_decoder_mb", &self.video_decoder_mb)
            .field("video_timeout_s", &self.video_timeout_s)
            .field("video_concurrency", &self.video_concurrency)
            .field("max_clip_bytes", &self.max_clip_bytes)
            .field("max_clip_seconds", &self.max_clip_seconds)
            .field("max_clip_pixels", &self.max_clip_pixels)
            .field("clip_upload_timeout_s", &self.clip_upload_timeout_s)
            .field("clip_decoder_mb", &self.clip_decoder_mb)
            .field("clip_decoders", &self.clip_decoders)
            .field("clip_ahead_s", &self.clip_ahead_s)
            .field("clip_spool_dir", &self.clip_spool_dir)
            .field("clip_spool_mb", &self.clip_spool_mb)
            .field("flash_session_ttl_minutes", &self.flash_session_ttl_minutes)
            .field("sound_report_ttl_s", &self.sound_report_ttl_s)
            .field("sound_max_residual_ms", &self.sound_max_residual_ms)
            .field("sound_max_uncertainty_m", &self.sound_max_uncertainty_m)
            .field("session_ttl_hours", &self.session_ttl_hours)
            .field("device_ttl_days", &self.device_ttl_days)
            .field("tick_ms", &self.tick_ms)
            .field("lookahead_ms", &self.lookahead_ms)
            .field("window_ms", &self.window_ms)
            .field("ws_queue_capacity", &self.ws_queue_capacity)
            .field("frame_cache_mb", &self.frame_cache_mb)
            .field("socket_send_buffer", &self.socket_send_buffer)
            .field("phone_locate_per_min", &self.phone_locate_per_min)
            .field("trusted_proxies", &self.trusted_proxies)
            .field("logins_per_min", &self.logins_per_min)
            .field("guests_per_min", &self.guests_per_min)
            .field("searches_per_min", &self.searches_per_min)
            .field("uploads_per_min", &self.uploads_per_min)
            .field(
                "pending_sockets_per_address",
                &self.pending_sockets_per_address,
            )
            .field("idle_scene_s", &self.idle_scene_s)
            .field("scene_phone_writes_per_s", &self.scene_phone_writes_per_s)
            .field("search_cache_mb", &self.search_cache_mb)
            .field("ics_cache_mb", &self.ics_cache_mb)
            .field("password_workers", &self.password_workers)
            .field("password_queue", &self.password_queue)
            .field(
                "bootstrap_admin",
                &self.bootstrap_admin.as_ref().map(|_| "<redacted>"),
            )
            .field("public_url", &self.public_url)
            .field("cors_origins", &self.cors_origins)
            .field("metrics_listen", &self.metrics_listen)
            .field("log_json", &self.log_json)
            .finish()
    }
}

/// A setting that holds a secret (a password, or a URL that may carry one): kept in a
/// [`SecretString`], which never prints it and wipes it from memory when dropped.
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s.to_owned()))
}

/// A listening address that may be turned off (`none`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaybeAddr(pub Option<SocketAddr>);

/// An address, or `none`/empty for none.
fn parse_optional_addr(s: &str) -> Result<MaybeAddr, String> {
    match s.trim() {
        "" | "none" | "off" => Ok(MaybeAddr(None)),
        addr => addr
            .parse()
            .map(|a| MaybeAddr(Some(a)))
            .map_err(|e| format!("{addr}: {e} (an address like 127.0.0.1:9464, or none)")),
    }
}

/// A URL split around its password: `scheme://user`, the password, `@host/...`. The userinfo
/// ends at the last `@` before the path, so an `@` in the password is the password's.
pub(crate) fn password_parts(url: &str) -> Option<(&str, &str, &str)> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    let colon = authority[..at].find(':')?;
    Some((
        &url[..start + colon],
        &rest[colon + 1..at],
        &url[start + at..],
    ))
}

/// Hides the password of `scheme://user:password@host/...?password=...`.
fn redact_url(url: &str) -> String {
    let url = match password_parts(url) {
        Some((user, _, host)) => format!("{user}:<redacted>{host}"),
        None => url.to_owned(),
    };
    let Some((path, query)) = url.split_once('?') else {
        return url;
    };
    let query: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if k.to_ascii_lowercase().contains("password") => {
                format!("{k}=<redacted>")
            }
            _ => kv.to_owned(),
        })
        .collect();
    format!("{path}?{}", query.join("&"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact_url("postgres://c3s:hunter2@db:5432/c3s"),
            "postgres://c3s:<redacted>@db:5432/c3s"
        );
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1/c3s"),
            "postgres://postgres@127.0.0.1/c3s"
        );
        assert_eq!(
            redact_url("mongodb://h1,h2/?replicaSet=rs"),
            "mongodb://h1,h2/?replicaSet=rs"
        );
        assert_eq!(
            redact_url("postgres://c3s:p@ss@db/c3s"),
            "postgres://c3s:<redacted>@db/c3s"
        );
        assert_eq!(
            redact_url("postgres:///c3s?host=/run/pg&password=x"),
            "postgres:///c3s?host=/run/pg&password=<redacted>"
        );
    }
}
