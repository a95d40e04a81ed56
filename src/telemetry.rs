//! Metrics in the Prometheus text format (the `metrics` facade with its Prometheus exporter),
//! served at `GET /metrics` on a listener of their own (`C3S_METRICS_LISTEN`), never on the
//! public port.
//!
//! What is measured, where:
//! - `c3s_phones_connected`, `c3s_phones_located` (gauges, per `scene`): `live::report_presence`
//! - `c3s_joins_total`, `c3s_messages_out_total` (per `kind`), `c3s_bytes_out_total`,
//!   `c3s_sync_error_ms` (histogram): `ws`
//! - `c3s_queue_drops_total`: `hub::Conn::offer`
//! - `c3s_scheduler_tick_seconds` (histogram): `scheduler`
//! - `c3s_http_request_duration_seconds` (histogram, per `route` as `/api/scenes/:scene_id`,
//!   `method`, `status`): [`track_http`]
//! - `c3s_db_pool_connections` (per `state`: `open`, `idle`), `c3s_frame_cache_hits_total`,
//!   `c3s_frame_cache_misses_total`: `live::report_presence`
//! - `c3s_gridfs_fetch_seconds` (histogram): `framecache`

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Buckets of durations, in seconds: 0.5 ms to 10 s.
const SECONDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets of clock-sync errors, in ms (as the operator's histogram).
const SYNC_MS: [f64; 8] = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0];

/// The process's recorder (one per process: the `metrics` facade is global).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = || {
            PrometheusBuilder::new()
                // a freed scene's gauges stop being set, and go (every live gauge is set
                // every couple of seconds)
                .idle_timeout(
                    metrics_util::MetricKindMask::GAUGE,
                    Some(std::time::Duration::from_secs(120)),
                )
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Full("c3s_sync_error_ms".into()), &SYNC_MS)
                })
                .expect("bucket lists are not empty")
        };
        builder().install_recorder().unwrap_or_else(|e| {
            // another recorder is installed (a host embedding C3S): render ours anyway
            tracing::warn!(error = %e, "metrics recorder not installed globally");
            builder().build_recorder().handle()
        })
    })
}

/// Binds the metrics listener; none (with a warning) when it cannot, so a busy metrics port
/// never keeps the server from starting.
pub async fn bind(addr: Option<SocketAddr>) -> Option<TcpListener> {
    let addr = addr?;
    handle();
    match TcpListener::bind(addr).await {
        Ok(listener) => Some(listener),
        Err(e) => {
            tracing::warn!(%addr, error = %e, "metrics listener not started");
            None
        }
    }
}

/// Serves `GET /metrics` until `stop`, and keeps the histograms' windows moving.
pub async fn serve(listener: TcpListener, stop: CancellationToken) {
    let app = Router::new().route("/metrics", get(|| async { handle().render() }));
    let upkeep_stop = stop.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = every.tick() => handle().run_upkeep(),
                _ = upkeep_stop.cancelled() => return,
            }
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(e) = served {
        tracing::warn!(error = %e, "metrics listener ended");
    }
}

/// Middleware: the latency of every routed request, by route template, method and status.
pub async fn track_http(req: Request, next: Next) -> Response {
    // `/api/scenes/:scene_id`: braces in label values trip up some scrapers' parsers
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().replace('{', ":").replace('}', ""))
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    metrics::histogram!(
        "c3s_http_request_duration_seconds",
        "route" => route,
        "method" => method,
        "status" => response.status().as_u16().to_string()
    )
    .record(started.elapsed().as_secs_f64());
    response
}

/// The local address of a bound metrics listener, for logs and tests.
pub fn local_addr(listener: &Option<TcpListener>) -> Option<SocketAddr> {
    listener.as_ref().and_then(|l| l.local_addr().ok())
}
