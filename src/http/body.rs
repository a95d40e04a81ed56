//! Every request body has a minimum rate: after a grace period, a client that sends less than
//! `min_body_bytes_per_s` on average is cut off. A client trickling its upload at 100 B/s
//! would otherwise hold an upload slot (and its memory) for as long as it likes.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use futures::StreamExt;
use tokio::time::Instant;

use crate::app::AppState;

/// The error a too-slow body ends with; handlers that read bodies map it to 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body arrives slower than {min_bytes_per_s} bytes a second")]
pub struct TooSlow {
    pub min_bytes_per_s: u64,
}

/// The answer to a body that could not be read: 408 when it came too slowly, else 400.
pub fn read_failed(e: axum::Error) -> crate::error::Error {
    if is_too_slow(&e) {
        crate::error::Error::TooSlow(e.to_string())
    } else {
        crate::error::Error::bad_request(
            "body_read_failed",
            format!("reading the body failed: {e}"),
        )
    }
}

/// A body whose declared length passes `limit` is refused before any of it is read; the
/// declared length, if any.
pub fn declared_length(
    headers: &axum::http::HeaderMap,
    limit: u64,
) -> crate::error::Result<Option<u64>> {
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(crate::error::Error::PayloadTooLarge { limit });
    }
    Ok(declared)
}

/// Whether a body error is [`TooSlow`].
pub fn is_too_slow(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<TooSlow>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Middleware: wraps the request's body in the minimum-rate check (0 turns it off).
pub async fn min_rate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let min = state.config.min_body_bytes_per_s;
    if min == 0 {
        return next.run(request).await;
    }
    let grace = Duration::from_millis(state.config.body_rate_grace_ms);
    let (parts, body) = request.into_parts();
    next.run(Request::from_parts(parts, at_least(body, min, grace)))
        .await
}

/// `body`, ending with [`TooSlow`] once fewer than `min_bytes_per_s` × (waited − `grace`)
/// bytes have arrived, where `waited` is the time spent waiting for the client's bytes only:
/// a handler that waits for an upload slot before it reads on is not the client's fault.
pub fn at_least(body: Body, min_bytes_per_s: u64, grace: Duration) -> Body {
    let stream = body.into_data_stream();
    let state = (stream, 0u64, Duration::ZERO, false);
    let limited = futures::stream::unfold(
        state,
        move |(mut stream, received, waited, done)| async move {
            if done {
                return None;
            }
            // the next bytes must come before the average falls under the minimum
            let allowed = grace + Duration::from_secs_f64(received as f64 / min_bytes_per_s as f64);
            let asked = Instant::now();
            let next = tokio::time::timeout(allowed.saturating_sub(waited), stream.next()).await;
            let waited = waited + asked.elapsed();
            match next {
                Ok(Some(Ok(chunk))) => {
                    let received = received + chunk.len() as u64;
                    Some((Ok(chunk), (stream, received, waited, false)))
                }
                Ok(Some(Err(e))) => {
                    Some((Err(axum::Error::new(e)), (stream, received, waited, true)))
                }
                Ok(None) => None,
                Err(_) => {
                    metrics::counter!("c3s_slow_bodies_total").increment(1);
                    let slow = axum::Error::new(TooSlow { min_bytes_per_s });
                    Some((Err(slow), (stream, received, waited, true)))
                }
            }
        },
    );
    Body::from_stream(limited)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_trickle_is_cut_off_after_the_grace_and_a_steady_body_is_not() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, std::io::Error>>(4);
        let trickle = Body::from_stream(tokio_stream_of(rx));
        let grace = Duration::from_millis(200);
        let reader = tokio::spawn(axum::body::to_bytes(
            at_least(trickle, 1000, grace),
            1 << 20,
        ));
        for _ in 0..10 {
            let _ = tx.send(Ok(bytes::Bytes::from_static(b"x"))).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let e = reader.await.unwrap().unwrap_err();
        assert!(is_too_slow(&e), "{e}");

        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let steady = Body::from_stream(tokio_stream_of(rx));
        let reader = tokio::spawn(axum::body::to_bytes(at_least(steady, 1000, grace), 1 << 20));
        for _ in 0..10 {
            tx.send(Ok(bytes::Bytes::from(vec![0u8; 200])))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(tx);
        assert_eq!(reader.await.unwrap().unwrap().len(), 2000);
    }

    fn tokio_stream_of(
        rx: tokio::sync::mpsc::Receiver<Result<bytes::Bytes, std::io::Error>>,
    ) -> impl futures::Stream<Item = Result<bytes::Bytes, std::io::Error>> {
        futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        })
    }
}
