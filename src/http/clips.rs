//! Clips: an operator uploads a video, which becomes one entry of the scene's frame list
//! (README "Clips"). The body is the video itself; it is streamed to GridFS and to a local file
//! as it arrives (hashed on the way), then read by FFmpeg (`crate::clips::check`). A file that
//! is not taken has its GridFS file deleted again, so a refused upload leaves storage as it was;
//! a taken one keeps its local file as the node's copy for playback.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use mongodb::bson::doc;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::extract::{Auth, Json, Path, Query};
use super::frames::{delete_bytes_after_commit, insert_frames};
use super::scenes::scene_with_right;
use crate::app::AppState;
use crate::auth::Permission;
use crate::clips::{ClipError, ClipInfo, MAX_PLAY_FPS};
use crate::error::{Error, ErrorBody, Result};
use crate::store::{self, frames::Frame, frames::NewClip, frames::NewFrame};
use crate::text::Rule;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload_clip))
        .routes(routes!(clip_poster))
}

/// The path of the clip upload (its request timeout is its own: `C3S_CLIP_UPLOAD_TIMEOUT_S`).
pub fn is_clip_upload(method: &axum::http::Method, path: &str) -> bool {
    method == axum::http::Method::POST
        && path.starts_with("/api/scenes/")
        && path.ends_with("/clips")
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ClipParams {
    /// The file's name, kept for people.
    pub name: Option<String>,
    /// The rate the clip plays at, 1 to 60 frames per second (default: its own, at most 30).
    pub fps: Option<u32>,
}

impl From<ClipError> for Error {
    fn from(e: ClipError) -> Self {
        let message = e.to_string();
        match e {
            ClipError::NotAVideo => Error::UnsupportedMediaType(message),
            ClipError::NoVideoStream => Error::invalid("no_video_stream", message),
            ClipError::NoDuration => Error::invalid("invalid_video", message),
            ClipError::TooLong { .. } => Error::invalid("video_too_long", message),
            ClipError::TooLarge { .. } => Error::invalid("video_too_large", message),
            ClipError::TimedOut(_) => Error::invalid("video_too_slow", message),
            ClipError::Undecodable => Error::invalid("invalid_video", message),
            ClipError::NoDecoder => Error::Unavailable("the video decoder"),
        }
    }
}

/// Which show frames a stretch plays: the first, how many, and what they last (ms).
pub fn clip_frames(start_ms: i32, end_ms: i32, fps: i32) -> (u32, u32, u32) {
    let fps = fps.max(1) as i64;
    let first = i64::from(start_ms) * fps / 1000;
    let frames = ((i64::from(end_ms - start_ms) * fps) / 1000).max(1) as u32;
    (
        first as u32,
        frames,
        crate::playback::ClipPlay::duration_ms(frames, fps as u32),
    )
}

pub fn check_play_fps(fps: u32) -> Result<i32> {
    if (1..=MAX_PLAY_FPS).contains(&fps) {
        Ok(fps as i32)
    } else {
        Err(Error::invalid(
            "invalid_fps",
            format!("a clip plays at 1 to {MAX_PLAY_FPS} frames per second"),
        ))
    }
}

/// Body pieces waiting for GridFS at most (each a few tens of KiB).
const STORE_PIPELINE: usize = 64;

/// A file removed when dropped, unless kept.
struct TempFile(Option<std::path::PathBuf>);

impl TempFile {
    fn path(&self) -> &std::path::Path {
        self.0.as_deref().expect("not kept")
    }

    fn keep(mut self) -> std::path::PathBuf {
        self.0.take().expect("not kept")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the upload wrote: the local file, its hash and size, and the GridFS file.
struct Received {
    file: TempFile,
    sha256: [u8; 32],
    bytes: u64,
    gridfs: store::gridfs::Upload,
}

/// Streams the body to GridFS and to a local file, hashing it; refuses it past `limit`.
async fn receive(
    state: &AppState,
    scene_id: Uuid,
    name: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received> {
    let limit = state.config.max_clip_bytes;
    super::body::declared_length(headers, limit)?;
    let failed = super::body::read_failed;
    let spool = &state.frame_cache.clips().settings().spool;
    tokio::fs::create_dir_all(spool)
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    let path = TempFile(Some(spool.join(format!("upload-{}.part", Uuid::new_v4()))));
    let created = tokio::fs::File::create(path.path())
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    let mut local = tokio::io::BufWriter::with_capacity(1 << 20, created);
    let metadata = doc! { "scene_id": scene_id.to_string(), "kind": "clip" };
    let gridfs = state.frame_store.start_upload(name, metadata).await?;
    // GridFS is written by a task of its own, a few pieces behind the body: the body, the
    // hash and the local file go on while the store takes a piece
    let (pieces, mut to_store) = tokio::sync::mpsc::channel::<bytes::Bytes>(STORE_PIPELINE);
    let storing = tokio::spawn(async move {
        let mut gridfs = gridfs;
        while let Some(piece) = to_store.recv().await {
            if let Err(e) = gridfs.write(&piece).await {
                return (gridfs, Err(Error::from(e)));
            }
        }
        (gridfs, Ok(()))
    });
    let mut hasher = Sha256::new();
    let mut bytes = 0u64;
    let mut stream = body.into_data_stream();
    let written: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(failed)?;
            bytes += chunk.len() as u64;
            if bytes > limit {
                return Err(Error::PayloadTooLarge { limit });
            }
            hasher.update(&chunk);
            tokio::io::AsyncWriteExt::write_all(&mut local, &chunk)
                .await
                .map_err(|e| Error::Internal(e.into()))?;
            if pieces.send(chunk).await.is_err() {
                break; // the store failed: its error is below
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut local)
            .await
            .map_err(|e| Error::Internal(e.into()))?;
        Ok(())
    }
    .await;
    drop(pieces);
    let (gridfs, stored) = storing.await.map_err(|e| Error::Internal(e.into()))?;
    if let Err(e) = written.and(stored) {
        gridfs.abort().await;
        return Err(e);
    }
    Ok(Received {
        file: path,
        sha256: hasher.finalize().into(),
        bytes,
        gridfs,
    })
}

/// Uploads a video as one clip, appended after the scene's last frame. The body is the video
/// itself (not multipart): MP4, MOV, WebM or Matroska.
#[utoipa::path(post, path = "/scenes/{scene_id}/clips", tag = "frames",
    params(("scene_id" = Uuid, Path), ClipParams),
    request_body(content = Vec<u8>, description = "the video file", content_type = "video/mp4"),
    responses((status = 201, body = Frame), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 408, body = ErrorBody, description = "the body came too slowly, or the upload took longer than `C3S_CLIP_UPLOAD_TIMEOUT_S`"),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody, description = "not a video file"),
        (status = 422, body = ErrorBody, description = "no video stream, truncated or undecodable, too long or too large"),
        (status = 429, body = ErrorBody, description = "too many uploads by this account; see `Retry-After`"),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
async fn upload_clip(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path(scene_id): Path<Uuid>,
    Query(params): Query<ClipParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Frame>)> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    state.rate_limits.uploads.check(&me.user_id)?;
    let name = Rule::line("name", 255).clean_opt(params.name.as_deref())?;
    let fps = params.fps.map(check_play_fps).transpose()?;
    let started = std::time::Instant::now();
    let received = receive(&state, scene_id, &name, &headers, body).await?;
    let received_s = started.elapsed().as_secs_f64();
    // read one (or `C3S_VIDEO_CONCURRENCY`) at a time, like the observers' clips; the
    // slot is taken once the body is in, so a slow upload holds up nobody
    let _slot = state
        .video_slots
        .clone()
        .acquire_owned()
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    if received.bytes == 0 {
        received.gridfs.abort().await;
        return Err(Error::invalid("empty_body", "the body is empty"));
    }
    let limits = state.config.clip_limits();
    let path = received.file.path().to_path_buf();
    let checked = tokio::task::spawn_blocking(
        move || -> std::result::Result<(ClipInfo, Vec<u8>), ClipError> {
            // the two read the file at once: each is mostly FFmpeg starting and reading
            // the index, and the upload is answered only after both
            let (info, poster) = std::thread::scope(|s| {
                let poster = s.spawn(|| crate::clips::poster(&path, 0, &limits));
                let info = crate::clips::check(&path, &limits);
                (info, poster.join())
            });
            let info = info?;
            let poster = poster.map_err(|_| ClipError::Undecodable)??;
            Ok((info, poster))
        },
    )
    .await
    .map_err(|e| Error::Internal(e.into()));
    let (info, poster) = match checked {
        Ok(Ok(checked)) => checked,
        Ok(Err(e)) => {
            received.gridfs.abort().await;
            return Err(e.into());
        }
        Err(e) => {
            received.gridfs.abort().await;
            return Err(e);
        }
    };
    let probed_s = started.elapsed().as_secs_f64();
    let stored = received.gridfs.finish().await?;
    tracing::info!(
        bytes = received.bytes,
        received_s,
        probed_s,
        stored_s = started.elapsed().as_secs_f64(),
        "clip uploaded"
    );
    let fps = fps.unwrap_or(info.default_play_fps() as i32);
    let (_, _, duration_ms) = clip_frames(0, info.duration_ms as i32, fps);
    let row = NewFrame {
        duration_ms: duration_ms.max(1) as i32,
        width: info.width as i32,
        height: info.height as i32,
        content_type: info.content_type,
        byte_size: received.bytes as i64,
        sha256: &received.sha256,
        gridfs_id: stored.to_hex(),
        original_name: &name,
        clip: Some(NewClip {
            start_ms: 0,
            end_ms: info.duration_ms as i32,
            fps,
            video_duration_ms: info.duration_ms as i32,
            video_fps: info.fps,
            codec: &info.codec,
            video_start_s: info.start_s,
            poster: &poster,
        }),
    };
    match insert_frames(&state, scene_id, me.user_id, std::slice::from_ref(&row)).await {
        Ok(mut frames) => {
            // this node's copy for playback: no fetch from GridFS when the show starts
            let sha = hex::encode(received.sha256);
            let file = received.file;
            let clips_cache = state.frame_cache.clone();
            let _ = tokio::task::spawn_blocking(move || {
                let path = file.keep();
                if clips_cache.clips().adopt(&sha, &path).is_err() {
                    let _ = std::fs::remove_file(path);
                }
            })
            .await;
            Ok((StatusCode::CREATED, Json(frames.remove(0))))
        }
        Err(e) => {
            if !matches!(e, Error::Unavailable(_) | Error::Internal(_)) {
                delete_bytes_after_commit(&state, vec![stored.to_hex()]).await;
            }
            Err(e)
        }
    }
}

/// A clip's poster: a PNG of its first frame shown, at most 320 pixels wide.
#[utoipa::path(get, path = "/scenes/{scene_id}/frames/{frame_id}/poster", tag = "frames",
    params(("scene_id" = Uuid, Path), ("frame_id" = Uuid, Path)),
    responses((status = 200, description = "the poster", content_type = "image/png"),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody, description = "no such frame, or not a clip")),
    security(("bearer" = [])))]
async fn clip_poster(
    State(state): State<AppState>,
    Auth(me): Auth,
    Path((scene_id, frame_id)): Path<(Uuid, Uuid)>,
) -> Result<Response> {
    scene_with_right(&state, &me, scene_id, Permission::Operator).await?;
    let poster = store::frames::poster_of(&state.db, scene_id, frame_id)
        .await?
        .ok_or(Error::NotFound("clip"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png"),
            (
                header::CACHE_CONTROL,
                "private, max-age=31536000, immutable",
            ),
        ],
        poster,
    )
        .into_response())
}

/// A clip's trim and rate, checked against what the file is.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ClipUpdate {
    /// Where the stretch that plays starts, ms into the video.
    pub start_ms: Option<i32>,
    /// Where it ends, ms into the video (at most the video's length).
    pub end_ms: Option<i32>,
    /// The rate it plays at, 1 to 60.
    pub fps: Option<u32>,
}

/// The new (start, end, fps) of a clip, or why not.
pub fn updated_clip(frame: &Frame, update: &ClipUpdate) -> Result<(i32, i32, i32)> {
    let clip = frame.clip.as_ref().ok_or_else(|| {
        Error::invalid("not_a_clip", "only a clip has a start, an end and a rate")
    })?;
    let start = update.start_ms.unwrap_or(clip.start_ms);
    let end = update.end_ms.unwrap_or(clip.end_ms);
    let fps = update
        .fps
        .map(check_play_fps)
        .transpose()?
        .unwrap_or(clip.fps);
    if start < 0 || end > clip.video_duration_ms || end <= start {
        return Err(Error::invalid(
            "invalid_trim",
            format!(
                "a clip's start and end are 0 ≤ start < end ≤ {} ms (the video's length)",
                clip.video_duration_ms
            ),
        ));
    }
    if i64::from(end - start) * i64::from(fps) < 1000 {
        return Err(Error::invalid(
            "invalid_trim",
            "the stretch must hold at least one frame",
        ));
    }
    Ok((start, end, fps))
}
