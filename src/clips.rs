//! Clips: videos an operator uploads that play as one entry of a show's frame list.
//!
//! Upload side ([`check`], [`poster`]): the file is read by FFmpeg's `ffprobe` and refused when
//! it is not a video or passes the limits; a small poster frame is cut for people. Playback
//! side ([`FrameStream`]): `ffmpeg` decodes the file from an instant on, scaled to a show's grid
//! and converted to RGB, every source frame with its presentation time; which source frame a
//! show frame shows is then decided here from those times ([`source_frame_for`]), so the colours
//! do not depend on where a decode started: several nodes, or one that seeks, get the same.
//!
//! FFmpeg runs as a bounded child process, as for the flash clips
//! (`crate::locate::flash::video`): a lower priority, an address-space limit, a deadline for
//! probing and cutting the poster, and for a playback decode a stall deadline (a decoder that
//! gives no frame for [`STALL`] while it is read is killed).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::locate::flash::video::{
    bounded, number, reap, showinfo_time, shown_size, watchdog, VideoLimits,
};

/// What a clip may be, and what reading it may cost.
#[derive(Debug, Clone, Copy)]
pub struct ClipLimits {
    /// Largest file, in bytes.
    pub max_bytes: u64,
    /// Longest clip, in seconds.
    pub max_seconds: f64,
    /// Largest frame, in pixels (4096 × 2304 fits).
    pub max_pixels: u64,
    /// How long probing, or cutting a poster, may take.
    pub timeout: Duration,
    /// Each FFmpeg child's address space.
    pub decoder_memory_bytes: u64,
    /// Decoder threads per child.
    pub threads: usize,
}

impl ClipLimits {
    /// A playback decode: its CPU limit is for a runaway, not the clip's length (a 10-minute
    /// 4K clip takes many CPU-minutes).
    fn playback(&self) -> VideoLimits {
        VideoLimits {
            timeout: Duration::from_secs_f64((self.max_seconds * 20.0).max(600.0)),
            ..self.process()
        }
    }

    fn process(&self) -> VideoLimits {
        VideoLimits {
            max_seconds: self.max_seconds,
            max_pixels: self.max_pixels,
            max_fps: 1000.0,
            max_decoded_bytes: u64::MAX,
            timeout: self.timeout,
            decoder_memory_bytes: self.decoder_memory_bytes,
            threads: self.threads,
        }
    }
}

/// The frame rates a clip may play at (a phone cannot show faster than its screen).
pub const MAX_PLAY_FPS: u32 = 60;
/// The rate a clip plays at unless the operator says: its own, up to this.
pub const DEFAULT_MAX_PLAY_FPS: u32 = 30;
/// A playback decoder that gives no frame for this long while read is killed.
pub const STALL: Duration = Duration::from_secs(15);

/// What the file is, as FFmpeg reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClipInfo {
    pub content_type: &'static str,
    /// The frame's size as shown (after the file's rotation).
    pub width: u32,
    pub height: u32,
    pub duration_ms: u32,
    /// The file's frame rate; none when it varies or is not said.
    pub fps: Option<f64>,
    pub codec: String,
    pub rotation: i32,
    /// The presentation time of the video's start, in seconds (0 for most files).
    pub start_s: f64,
}

impl ClipInfo {
    /// The rate the clip plays at by default: its own (rounded), at most 30; 30 when it varies.
    pub fn default_play_fps(&self) -> u32 {
        self.fps
            .map_or(DEFAULT_MAX_PLAY_FPS, |f| f.round() as u32)
            .clamp(1, DEFAULT_MAX_PLAY_FPS)
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClipError {
    #[error("this is not a video file that can be read (MP4, MOV, WebM or Matroska)")]
    NotAVideo,
    #[error("the file has no video in it (audio only?)")]
    NoVideoStream,
    #[error(
        "the video's length cannot be told; re-encode it (e.g. `ffmpeg -i IN -c copy OUT.mp4`)"
    )]
    NoDuration,
    #[error("the video is {seconds:.1} s long; at most {max} s are taken")]
    TooLong { seconds: f64, max: f64 },
    #[error("the video is {width}×{height}; at most {max} pixels a frame are taken")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("reading the video took longer than {0} s")]
    TimedOut(u64),
    #[error("the video could not be decoded")]
    Undecodable,
    #[error("the server cannot decode videos (FFmpeg is missing)")]
    NoDecoder,
}

fn rate(v: &serde_json::Value) -> Option<f64> {
    let (a, b) = v.as_str()?.split_once('/')?;
    let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
    (a > 0.0 && b > 0.0).then_some(a / b)
}

/// Runs a bounded child to its end and returns its standard output (at most `max_out` bytes),
/// or none when it failed or passed the deadline.
fn run_bounded(
    mut cmd: std::process::Command,
    max_out: u64,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, ClipError> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|_| ClipError::NoDecoder)?;
    let mut stdout = child.stdout.take().expect("piped");
    let child = Arc::new(Mutex::new(child));
    let deadline = Instant::now() + timeout;
    let done = watchdog(child.clone(), deadline);
    let mut out = Vec::new();
    let read = (&mut stdout).take(max_out).read_to_end(&mut out);
    drop(stdout);
    let status = reap(&child, deadline);
    let _ = done.send(());
    let Some(status) = status else {
        return Err(ClipError::TimedOut(timeout.as_secs()));
    };
    Ok((read.is_ok() && (out.len() as u64) < max_out && status.success()).then_some(out))
}

/// What the file is, or why it is not taken. Blocking: call it off the async threads.
pub fn check(path: &Path, limits: &ClipLimits) -> Result<ClipInfo, ClipError> {
    let process = limits.process();
    let mut cmd = bounded("ffprobe", &process);
    cmd.args(["-v", "error", "-print_format", "json"])
        .args(["-show_streams", "-show_format"])
        .arg(path);
    // a file that starts like a video container but cannot be read is broken (truncated, say)
    let broken = if looks_like_video(path) {
        ClipError::Undecodable
    } else {
        ClipError::NotAVideo
    };
    let out = run_bounded(cmd, 4 << 20, limits.timeout)?.ok_or(broken.clone())?;
    let info: serde_json::Value = serde_json::from_slice(&out).map_err(|_| ClipError::NotAVideo)?;
    let format_name = info["format"]["format_name"].as_str().unwrap_or("");
    let streams = info["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1);
    // images and image sequences are frames, not clips
    let image_like =
        format_name.contains("_pipe") || format_name == "image2" || format_name == "gif";
    let container = if format_name.starts_with("mov,mp4") {
        let brand = info["format"]["tags"]["major_brand"].as_str().unwrap_or("");
        Some(if brand.trim() == "qt" {
            "video/quicktime"
        } else {
            "video/mp4"
        })
    } else if format_name.starts_with("matroska") {
        let codec = video.and_then(|v| v["codec_name"].as_str()).unwrap_or("");
        Some(if matches!(codec, "vp8" | "vp9" | "av1") {
            "video/webm"
        } else {
            "video/x-matroska"
        })
    } else {
        None
    };
    let Some(content_type) = container.filter(|_| !image_like) else {
        return Err(broken);
    };
    let video = video.ok_or(ClipError::NoVideoStream)?;
    let (width, height, rotation) = shown_size(video).ok_or(ClipError::NotAVideo)?;
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(ClipError::TooLarge {
            width,
            height,
            max: limits.max_pixels,
        });
    }
    // a constant rate when the file's nominal and average rates agree
    let fps = match (rate(&video["r_frame_rate"]), rate(&video["avg_frame_rate"])) {
        (Some(r), Some(a)) if (r - a).abs() <= 0.01 * r => Some(a),
        (Some(r), None) => Some(r),
        _ => None,
    }
    .filter(|f| (1.0..=1000.0).contains(f));
    let seconds = number(&video["duration"])
        .or_else(|| number(&info["format"]["duration"]))
        .filter(|&s| s > 0.0)
        .ok_or(ClipError::NoDuration)?;
    if seconds > limits.max_seconds {
        return Err(ClipError::TooLong {
            seconds,
            max: limits.max_seconds,
        });
    }
    let start_s = number(&video["start_time"])
        .or_else(|| number(&info["format"]["start_time"]))
        .unwrap_or(0.0);
    Ok(ClipInfo {
        content_type,
        width,
        height,
        duration_ms: ((seconds * 1000.0).floor() as u32).max(1),
        fps,
        codec: video["codec_name"]
            .as_str()
            .unwrap_or("")
            .chars()
            .take(32)
            .collect(),
        rotation,
        start_s,
    })
}

/// Whether the file starts as an MP4/MOV (`ftyp`, `moov`, `mdat`, `wide`, `free` box) or a
/// Matroska/WebM (EBML) file does.
fn looks_like_video(path: &Path) -> bool {
    let mut head = [0u8; 12];
    let Ok(mut file) = std::fs::File::open(path) else {
        return false;
    };
    if file.read_exact(&mut head).is_err() {
        return false;
    }
    let mp4 = [b"ftyp", b"moov", b"mdat", b"wide", b"free"]
        .iter()
        .any(|b| &head[4..8] == *b);
    mp4 || head[..4] == [0x1a, 0x45, 0xdf, 0xa3]
}

/// Widest poster, in pixels.
const POSTER_WIDTH: u32 = 320;

/// A PNG of the frame at `at_ms` into the clip, at most 320 pixels wide. Blocking.
pub fn poster(path: &Path, at_ms: u32, limits: &ClipLimits) -> Result<Vec<u8>, ClipError> {
    let mut cmd = bounded("ffmpeg", &limits.process());
    cmd.args([
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-threads",
        "1",
    ])
    .args(["-ss", &format!("{:.3}", f64::from(at_ms) / 1000.0)])
    .arg("-i")
    .arg(path)
    .args(["-map", "0:v:0", "-frames:v", "1"])
    .args(["-vf", &format!("scale='min({POSTER_WIDTH},iw)':-2")])
    .args(["-f", "image2pipe", "-c:v", "png", "pipe:1"]);
    match run_bounded(cmd, 1 << 20, limits.timeout)? {
        Some(png) if !png.is_empty() => Ok(png),
        _ => Err(ClipError::Undecodable),
    }
}

/// How much later than a show frame's instant a source frame may be said to begin and still
/// count as begun (see [`source_frame_for`]); far less than a frame at 120 fps.
const TIME_SLACK_S: f64 = 0.001;

/// The source frame a show frame shows: the last one presented at or before the show frame's
/// instant (`start_s + index / fps` into the file). `times` are the decoded frames' times, in
/// order; none when every decoded frame is later.
pub fn source_frame_for(times: &[f64], start_s: f64, index: u32, fps: u32) -> Option<usize> {
    let at = start_s + f64::from(index) / f64::from(fps.max(1));
    // a millisecond of slack: FFmpeg prints times to six significant digits (1.06667 for
    // frame 32 of 30 fps), a millisecond at ten minutes
    let after = times.partition_point(|&t| t <= at + TIME_SLACK_S);
    after.checked_sub(1)
}

/// A running decode of a clip from an instant on: every source frame from there, scaled to
/// `w × h`, in RGB (three bytes a pixel, row by row), with its presentation time in seconds.
/// The child is killed when this is dropped.
pub struct FrameStream {
    child: Arc<Mutex<Child>>,
    stdout: std::process::ChildStdout,
    times: mpsc::Receiver<f64>,
    frame_bytes: usize,
    pid: u32,
}

impl FrameStream {
    /// Starts decoding so that the first frame given is the one showing at `from_s` into the
    /// file's timeline (or the first after it, when the file starts later). Blocking (spawns).
    pub fn start(
        path: &Path,
        from_s: f64,
        start_s: f64,
        w: u32,
        h: u32,
        limits: &ClipLimits,
    ) -> Result<FrameStream, ClipError> {
        // half a second early: the frame showing at `from_s` began before it (the caller
        // skips what it does not need); -copyts keeps the file's own times, and FFmpeg
        // counts -ss from the file's start (which `from_s` includes)
        let seek = (from_s - start_s - 0.5).max(0.0);
        let mut cmd = bounded("ffmpeg", &limits.playback());
        cmd.args(["-nostdin", "-nostats", "-hide_banner", "-loglevel", "info"])
            .args(["-threads", &limits.threads.max(1).to_string()])
            .args(["-copyts", "-ss", &format!("{seek:.6}")])
            .arg("-i")
            .arg(path)
            .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
            .args([
                "-vf",
                &format!("scale={w}:{h}:flags=area,format=rgb24,showinfo=checksum=0"),
            ])
            .args(["-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|_| ClipError::NoDecoder)?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        let (tx, times) = mpsc::sync_channel::<f64>(1024);
        std::thread::Builder::new()
            .name("c3s-clip-times".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    // only the filter's own lines (a file's tags are printed too)
                    if !line.starts_with("[Parsed_showinfo") {
                        continue;
                    }
                    let Some(t) = showinfo_time(&line) else {
                        continue;
                    };
                    if tx.send(t).is_err() {
                        return;
                    }
                }
            })
            .map_err(|_| ClipError::NoDecoder)?;
        Ok(FrameStream {
            child: Arc::new(Mutex::new(child)),
            stdout,
            times,
            frame_bytes: w as usize * h as usize * 3,
            pid,
        })
    }

    /// The next frame and its time; none at the clip's end. Fails when the decoder stalls for
    /// [`STALL`] or breaks.
    pub fn next_frame(&mut self) -> Result<Option<(f64, Vec<u8>)>, ClipError> {
        let mut rgb = vec![0u8; self.frame_bytes];
        let deadline = Instant::now() + STALL;
        let done = watchdog(self.child.clone(), deadline);
        let read = read_full(&mut self.stdout, &mut rgb);
        let _ = done.send(());
        if Instant::now() >= deadline {
            return Err(ClipError::TimedOut(STALL.as_secs()));
        }
        match read {
            Ok(true) => {}
            Ok(false) => {
                // the end of the file, or a decoder that died (a limit, a crash)
                let status = self.child.lock().unwrap_or_else(|p| p.into_inner()).wait();
                return match status {
                    Ok(s) if s.success() => Ok(None),
                    _ => Err(ClipError::Undecodable),
                };
            }
            Err(_) => return Err(ClipError::Undecodable),
        }
        let t = self
            .times
            .recv_timeout(Duration::from_secs(5))
            .map_err(|_| ClipError::Undecodable)?;
        if !t.is_finite() {
            return Err(ClipError::Undecodable);
        }
        Ok(Some((t, rgb)))
    }

    /// The decoder's largest resident memory so far.
    pub fn peak_rss(&self) -> u64 {
        crate::locate::flash::video::peak_rss(self.pid)
    }
}

/// Fills `buf` whole: true, or false at a clean end before its first byte.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match r.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

impl Drop for FrameStream {
    fn drop(&mut self) {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_show_frame_shows_the_last_source_frame_begun() {
        let times = [0.0, 0.04, 0.08, 0.12]; // 25 fps
                                             // at 30 fps: 0, 0.0333, 0.0667, 0.1, 0.1333
        let picked: Vec<_> = (0..5)
            .map(|i| source_frame_for(&times, 0.0, i, 30))
            .collect();
        assert_eq!(picked, [Some(0), Some(0), Some(1), Some(2), Some(3)]);
        // a frame at exactly the instant is the one shown
        assert_eq!(source_frame_for(&[0.0, 1.0 / 30.0], 0.0, 1, 30), Some(1));
        // every decoded frame later than the instant: none
        assert_eq!(source_frame_for(&[0.5], 0.0, 0, 30), None);
        // a file that starts late counts from its start
        assert_eq!(source_frame_for(&[1.4, 1.44], 1.4, 1, 25), Some(1));
    }
}
