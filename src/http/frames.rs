//! Frames of a scene: upload (streamed, checked, split), list, reorder, change duration,
//! download the stored bytes, delete.
//!
//! Bytes and rows are kept in step so that no failure leaves half a frame: on upload the bytes
//! go to GridFS first and the rows are inserted after, in one transaction; if the rows fail the
//! bytes are deleted again. On delete the row goes first; bytes whose delete fails are only
//! unreferenced garbage, never a row without bytes.

use crate::events::{FrameRef, SceneEvent};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mongodb::bson::{doc, oid::ObjectId};
use serde::Deserialize;
use tokio_util::compat::FuturesAsyncReadCompatExt;
use tokio_util::io::ReaderStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path, Query};
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::Permission;
use crate::error::{Error, ErrorBody, Result};
use crate::frames::{prepare_upload, FrameError, PreparedFrame, UploadLimits};
use crate::store::{self, frames::Frame, frames::NewFrame};
use crate::text::Rule;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_frames, list_frames))
        .routes(routes!(reorder_frames))
        .routes(routes!(update_frame, delete_frame))
        .routes(routes!(download_frame))
}

/// Shown when neither the request nor the animation says how long a frame lasts.
const DEFAULT_FRAME_DURATION_MS: u32 = 1000;
const MAX_FRAME_DURATION_MS: u32 = 3_600_000;
/// A frame's name is a file name, for people.
const MAX_FRAME_NAME_CHARS: usize = 255;
/// Read size when streaming a download: a quarter of a GridFS chunk (255 KiB), so a chunk
/// goes out in a few writes rather than sixty-odd 4 KiB ones.
const DOWNLOAD_BUFFER_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize, IntoParams)]
pub struct UploadParams {
    /// How long each new frame is shown; defaults to the animation's own delays, else 1000.
    pub duration_ms: Option<u32>,
    /// The file's name, kept for people (the operator page shows it).
    pub name: Option<String>,
}

/// A frame's duration: at least `min_frame_ms` (a phone cannot show faster than its screen,
/// and a show of thousands of 1 ms frames would cost the scheduler for nothing).
fn check_duration(ms: u32, min_frame_ms: u32) -> Result<i32> {
    let min = min_frame_ms.max(1);
    if (min..=MAX_FRAME_DURATION_MS).contains(&ms) {
        Ok(ms as i32)
    } else {
        Err(Error::invalid(
            "invalid_duration",
            format!("duration_ms is {min} to {MAX_FRAME_DURATION_MS}"),
        ))
    }
}

impl From<FrameError> for Error {
    fn from(e: FrameError) -> Self {
        let message = e.to_string();
        match e {
            FrameError::Empty => Error::invalid("empty_body", message),
            FrameError::UnsupportedFormat | FrameError::ContentTypeMismatch { .. } => {
                Error::UnsupportedMediaType(message)
            }
            FrameError::TooManyPixels { .. } => Error::invalid("too_many_pixels", message),
            FrameError::TooManyFrames { .. } => Error::invalid("too_many_frames", message),
            FrameError::AnimationTooLarge { .. } => Error::invalid("animation_too_large", message),
            FrameError::Undecodable(_) => Error::invalid("invalid_image", message),
        }
    }
}

/// Reads a request body into memory, refusing it as soon as it passes `limit` bytes (and
/// before reading anything when its declared length already does).
/// The memory decoding `bytes` needs (estimated from its header), out of the node's budget
/// (`decode_memory_mb`): a huge canvas waits for room rather than adding to the others. The
/// decode itself holds it.
pub(crate) async fn decode_memory(state: &AppState, bytes: &[u8]) -> Result<OwnedSemaphorePermit> {
    let need = crate::frames::decode_memory_mib(bytes)
        .unwrap_or(16)
        .min(state.config.decode_memory_mb.max(1));
    state
        .decode_memory
        .clone()
        .acquire_many_owned(need as u32)
        .await
        .map_err(|e| Error::Internal(e.into()))
}

/// Reads a body of at most `limit` bytes. The upload slot is taken once its first bytes have
/// arrived (a client that connects and sends nothing holds no slot), and stays with the
/// caller.
async fn read_body_limited(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    slots: &Arc<Semaphore>,
) -> Result<(Vec<u8>, OwnedSemaphorePermit)> {
    let declared = super::body::declared_length(headers, limit)?;
    let failed = super::body::read_failed;
    let mut stream = body.into_data_stream().peekable();
    if let Some(Err(_)) = std::pin::Pin::new(&mut stream).peek().await {
        let e = stream
            .next()
            .await
            .expect("peeked")
            .expect_err("peeked an error");
        return Err(failed(e));
    }
    let permit = slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    // each upload in flight may hold up to the limit in memory: only with a slot
    let mut bytes = Vec::with_capacity(declared.unwrap_or(0) as usize);
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(failed)?;
        if (bytes.len() + chunk.len()) as u64 > limit {
            return Err(Error::PayloadTooLarge { limit });
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok((bytes, permit))
}

/// Uploads one image as one frame, or an animated GIF/WebP as one frame per animation frame,
/// appended after the scene's last frame. The body is the image itself (not multipart).
#[utoipa::path(post, path = "/scenes/{scene_id}/frames", tag = "frames",
    params(("scene_id" = Uuid, Path), UploadParams),
    request_body(content = Vec<u8>, description = "the image bytes", content_type = "image/png"),
    responses((status = 201, body = [Frame]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "too many uploads by this account; see `Retry-After`"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn upload_frames(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Vec<Frame>>)> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    state.rate_limits.uploads.check(&me.user_id)?;
    let min_frame_ms = state.config.min_frame_ms;
    let requested_duration = params
        .duration_ms
        .map(|ms| check_duration(ms, min_frame_ms))
        .transpose()?;
    let name = Rule::line("name", MAX_FRAME_NAME_CHARS).clean_opt(params.name.as_deref())?;

    let (bytes, permit) = read_body_limited(
        &headers,
        body,
        state.config.max_upload_bytes,
        &state.upload_slots,
    )
    .await?;
    let declared = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let limits = UploadLimits {
        max_pixels: state.config.max_frame_pixels,
        max_animation_frames: state.config.max_animation_frames,
        max_animation_pixels: state.config.max_animation_pixels,
    };
    let memory = decode_memory(&state, &bytes).await?;
    // the slot and the memory go with the decode: a client that hangs up does not free them
    // while the decode goes on
    let prepared = tokio::task::spawn_blocking(move || {
        let _held = (permit, memory);
        prepare_upload(bytes, declared.as_deref(), limits)
    })
    .await
    .map_err(|e| Error::Internal(e.into()))??;

    let stored = store_bytes(&state, scene_id, &name, &prepared).await?;
    let rows: Vec<NewFrame> = prepared
        .iter()
        .zip(&stored)
        .map(|(p, id)| NewFrame {
            duration_ms: requested_duration
                .unwrap_or_else(|| p.delay_ms.unwrap_or(DEFAULT_FRAME_DURATION_MS) as i32),
            width: p.width as i32,
            height: p.height as i32,
            content_type: p.content_type,
            byte_size: p.bytes.len() as i64,
            sha256: &p.sha256,
            gridfs_id: id.to_hex(),
            original_name: &name,
            clip: None,
        })
        .collect();
    // A failed commit may still have committed (the connection died during it), so on a
    // failure the bytes are deleted only when the rows are surely not there; otherwise the
    // orphan sweep removes them if they are not.
    match insert_frames(&state, scene_id, me.user_id, &rows).await {
        Ok(frames) => Ok((StatusCode::CREATED, Json(frames))),
        Err(e) => {
            if !matches!(e, Error::Unavailable(_) | Error::Internal(_)) {
                delete_bytes_after_commit(&state, stored.iter().map(|id| id.to_hex()).collect())
                    .await;
            }
            Err(e)
        }
    }
}

/// The rows of uploaded frames (their bytes are in GridFS already), after the scene's last.
pub(super) async fn insert_frames(
    state: &AppState,
    scene_id: Uuid,
    actor: Uuid,
    rows: &[NewFrame<'_>],
) -> Result<Vec<Frame>> {
    let mut command = state.commands.begin(scene_id).await?;
    let frames = store::frames::append_frames(command.tx(), scene_id, rows).await?;
    let added = SceneEvent::FramesAdded {
        frames: frames
            .iter()
            .map(|f| FrameRef {
                frame_id: f.frame_id,
                position: f.position,
                duration_ms: f.duration_ms,
                gridfs_id: f.gridfs_id.clone(),
            })
            .collect(),
    };
    command.commit(Some(actor), vec![added]).await?;
    Ok(frames)
}

/// Writes every prepared frame to GridFS; on a failure deletes what it wrote and fails whole.
async fn store_bytes(
    state: &AppState,
    scene_id: Uuid,
    name: &str,
    prepared: &[PreparedFrame],
) -> Result<Vec<ObjectId>> {
    let mut stored = Vec::with_capacity(prepared.len());
    for (index, frame) in prepared.iter().enumerate() {
        let metadata = doc! {
            "scene_id": scene_id.to_string(),
            "content_type": frame.content_type,
            "sha256": hex::encode(frame.sha256),
            "index": index as i64,
        };
        match state.frame_store.put(name, metadata, &frame.bytes).await {
            Ok(id) => stored.push(id),
            Err(e) => {
                delete_bytes_after_commit(state, stored.iter().map(|id| id.to_hex()).collect())
                    .await;
                return Err(e.into());
            }
        }
    }
    Ok(stored)
}

/// Deletes GridFS files whose rows are gone (or were never written). Failures are logged: an
/// unreferenced file is garbage, not damage.
pub async fn delete_bytes_after_commit(state: &AppState, gridfs_ids: Vec<String>) {
    for id in gridfs_ids {
        let Ok(oid) = ObjectId::from_str(&id) else {
            continue;
        };
        if let Err(e) = state.frame_store.delete(oid).await {
            tracing::warn!(gridfs_id = %id, error = ?e, "could not delete frame bytes; left as garbage");
        }
    }
}

/// A scene's frames in show order.
#[utoipa::path(get, path = "/scenes/{scene_id}/frames", tag = "frames", params(("scene_id" = Uuid, Path)),
    responses((status = 200, body = [Frame]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn list_frames(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
) -> Result<Json<Vec<Frame>>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    Ok(Json(store::frames::list_frames(&state.db, scene_id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameOrder {
    /// Every frame of the scene, each once, in the new order.
    pub frame_ids: Vec<Uuid>,
}

/// Puts the scene's frames in a new order.
#[utoipa::path(put, path = "/scenes/{scene_id}/frames/order", tag = "frames", params(("scene_id" = Uuid, Path)),
    request_body = FrameOrder,
    responses((status = 200, body = [Frame]), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
async fn reorder_frames(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Json(body): Json<FrameOrder>,
) -> Result<Json<Vec<Frame>>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let mut command = state.commands.begin(scene_id).await?;
    let tx = command.tx();
    let current: HashSet<Uuid> = store::frames::list_frames(&mut **tx, scene_id)
        .await?
        .into_iter()
        .map(|f| f.frame_id)
        .collect();
    let wanted: HashSet<Uuid> = body.frame_ids.iter().copied().collect();
    if wanted.len() != body.frame_ids.len() || wanted != current {
        return Err(Error::Conflict(
            "frame_ids must list every frame of the scene exactly once; reload the frames and retry"
                .into(),
        ));
    }
    store::frames::reorder(tx, scene_id, &body.frame_ids).await?;
    let frames = store::frames::list_frames(&mut **tx, scene_id).await?;
    let reordered = SceneEvent::FramesReordered {
        frame_ids: body.frame_ids.clone(),
    };
    command.commit(Some(me.user_id), vec![reordered]).await?;
    Ok(Json(frames))
}

/// One of: a still's duration, or a clip's trim and rate.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameUpdate {
    pub duration_ms: Option<u32>,
    pub clip: Option<super::clips::ClipUpdate>,
}

/// Changes how long a frame is shown; for a clip, which stretch of it plays and at what rate
/// (its duration follows).
#[utoipa::path(patch, path = "/scenes/{scene_id}/frames/{frame_id}", tag = "frames",
    params(("scene_id" = Uuid, Path), ("frame_id" = Uuid, Path)), request_body = FrameUpdate,
    responses((status = 200, body = Frame), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
async fn update_frame(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, frame_id)): Path<(Uuid, Uuid)>,
    Json(body): Json<FrameUpdate>,
) -> Result<Json<Frame>> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let current = store::frames::frame_by_id(&state.db, scene_id, frame_id)
        .await?
        .ok_or(Error::NotFound("frame"))?;
    let mut command = state.commands.begin(scene_id).await?;
    let tx = command.tx();
    let frame = match (&body.duration_ms, &body.clip, current.clip.is_some()) {
        (Some(ms), None, false) => {
            let duration = check_duration(*ms, state.config.min_frame_ms)?;
            store::frames::set_duration(&mut **tx, scene_id, frame_id, duration).await?
        }
        (Some(_), None, true) => {
            return Err(Error::invalid(
                "invalid_duration",
                "a clip lasts what its stretch lasts: set its `clip` start and end instead",
            ))
        }
        (None, Some(update), _) => {
            let (start, end, fps) = super::clips::updated_clip(&current, update)?;
            let (_, _, duration) = super::clips::clip_frames(start, end, fps);
            store::frames::set_clip(
                &mut **tx,
                scene_id,
                frame_id,
                (start, end, fps),
                duration as i32,
            )
            .await?
        }
        _ => {
            return Err(Error::invalid(
                "invalid_update",
                "send one of `duration_ms` (a still) or `clip` (a clip)",
            ))
        }
    }
    .ok_or(Error::NotFound("frame"))?;
    let updated = SceneEvent::FrameUpdated {
        frame_id,
        duration_ms: frame.duration_ms,
    };
    command.commit(Some(me.user_id), vec![updated]).await?;
    Ok(Json(frame))
}

/// Deletes a frame and its bytes; later frames move up one place.
#[utoipa::path(delete, path = "/scenes/{scene_id}/frames/{frame_id}", tag = "frames",
    params(("scene_id" = Uuid, Path), ("frame_id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
async fn delete_frame(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, frame_id)): Path<(Uuid, Uuid)>,
) -> Result<StatusCode> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let mut command = state.commands.begin(scene_id).await?;
    let tx = command.tx();
    if store::shows::show_uses_frame(&mut **tx, scene_id, frame_id).await? {
        return Err(Error::Conflict(
            "the scene's show uses this frame; rebuild the show without it first".into(),
        ));
    }
    let (gridfs_id, sha256) = store::frames::delete_frame(tx, scene_id, frame_id)
        .await?
        .ok_or(Error::NotFound("frame"))?;
    command
        .commit(
            Some(me.user_id),
            vec![SceneEvent::FrameDeleted { frame_id }],
        )
        .await?;
    delete_bytes_after_commit(&state, vec![gridfs_id]).await;
    // this node's copy of a clip (another node's goes with its spool's budget)
    state.frame_cache.clips().forget(&hex::encode(sha256));
    Ok(StatusCode::NO_CONTENT)
}

/// The frame's stored bytes, streamed from GridFS (a still upload's original file, byte for
/// byte; an animation frame's PNG; a clip's video file, byte for byte).
#[utoipa::path(get, path = "/scenes/{scene_id}/frames/{frame_id}/image", tag = "frames",
    params(("scene_id" = Uuid, Path), ("frame_id" = Uuid, Path)),
    responses((status = 200, description = "the image", content_type = "image/*"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn download_frame(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, frame_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let frame = store::frames::frame_by_id(&state.db, scene_id, frame_id)
        .await?
        .ok_or(Error::NotFound("frame"))?;
    let oid = ObjectId::from_str(&frame.gridfs_id).map_err(|e| {
        Error::Internal(anyhow::anyhow!("stored gridfs id {}: {e}", frame.gridfs_id))
    })?;
    let stream = state.frame_store.open(oid).await?;
    let body = Body::from_stream(ReaderStream::with_capacity(
        stream.compat(),
        DOWNLOAD_BUFFER_BYTES,
    ));
    let mut response = body.into_response();
    let headers = response.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&frame.content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(frame.byte_size));
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", hex::encode(&frame.sha256.0))) {
        headers.insert(header::ETAG, v);
    }
    // a frame's bytes never change under its id
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=31536000, immutable"),
    );
    Ok(response)
}
