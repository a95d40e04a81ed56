//! Getting grey frames out of an observer's clip with FFmpeg, run as a bounded child process:
//! `ffprobe` says what the file is; `ffmpeg` decodes it into raw grey frames on a pipe, with
//! each frame's presentation time (its `showinfo` filter, on the same pass), scaled down to at
//! most ~2 megapixels a frame (a 4K frame's 2 × 2 blocks averaged: blobs stay a pixel or more,
//! and a 5 s clip fits in 330 MB).
//!
//! Why a child process and not libav in-process: a hostile or broken file can at worst make
//! the child crash, loop or eat memory, and the child is what the limits hold: a wall-clock
//! deadline (then it is killed), an address-space limit (`prlimit`), and a cap on the decoded
//! bytes read from it. The pipe costs little against the decode itself (docs/flash.md has the
//! figures).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::analyze::Clip;

/// What a clip may be, and what decoding it may cost.
#[derive(Debug, Clone, Copy)]
pub struct VideoLimits {
    /// Longest clip, in seconds.
    pub max_seconds: f64,
    /// Largest frame, in pixels (4096 × 2304 fits).
    pub max_pixels: u64,
    /// Frames above this rate are dropped evenly (a slow-motion clip is decoded at this rate).
    pub max_fps: f64,
    /// The decoded (stored) frames may take at most this many bytes.
    pub max_decoded_bytes: u64,
    /// How long probing and decoding may take, together.
    pub timeout: Duration,
    /// The decoder's address space.
    pub decoder_memory_bytes: u64,
    /// Decoder threads.
    pub threads: usize,
}

/// Stored frames above this many pixels are halved along each axis.
const MAX_STORED_PIXELS: u64 = 3_500_000;

/// What the file is, as FFmpeg reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    /// The frame's size as shown (after the file's rotation).
    pub width: u32,
    pub height: u32,
    pub codec: String,
    /// Frames per second, when the file says (a recording from a browser may not).
    pub fps: Option<f64>,
    pub duration_s: Option<f64>,
    pub rotation: i32,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VideoError {
    #[error("this is not a video file that can be read")]
    NotAVideo,
    #[error("the file has no video in it")]
    NoVideoStream,
    #[error("the video is {seconds:.1} s long; at most {max} s are taken")]
    TooLong { seconds: f64, max: f64 },
    #[error("the video is {width}×{height}; at most {max} pixels a frame are taken")]
    TooLarge { width: u32, height: u32, max: u64 },
    #[error("the video decodes to more than {max_mb} MB; send a shorter clip")]
    TooMuchData { max_mb: u64 },
    #[error("reading the video took longer than {0} s")]
    TimedOut(u64),
    #[error("the video could not be decoded")]
    Undecodable,
    #[error("the server cannot decode videos (FFmpeg is missing)")]
    NoDecoder,
}

/// Runs `program` with the limits (address space, CPU time) when `prlimit` is there, at a
/// lower priority than the server's own threads (the scheduler must not miss a tick).
pub(crate) fn bounded(program: &str, limits: &VideoLimits) -> Command {
    static PRLIMIT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let have = *PRLIMIT.get_or_init(|| {
        Command::new("prlimit")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if have {
        let mut cmd = Command::new("nice");
        cmd.args(["-n", "10", "prlimit"]);
        cmd.arg(format!("--as={}", limits.decoder_memory_bytes))
            .arg(format!(
                "--cpu={}",
                limits.timeout.as_secs().max(1) * limits.threads.max(1) as u64
            ))
            .arg("--")
            .arg(program);
        cmd
    } else {
        Command::new(program)
    }
}

/// Waits for a child to end, never holding its lock while it waits (the watchdog needs it
/// to kill a child that hangs); kills it at `deadline`. True when it ended by itself in time.
pub(crate) fn reap(
    child: &Mutex<std::process::Child>,
    deadline: Instant,
) -> Option<std::process::ExitStatus> {
    loop {
        if let Ok(Some(status)) = child.lock().expect("child lock").try_wait() {
            return (Instant::now() < deadline).then_some(status);
        }
        if Instant::now() >= deadline {
            let mut c = child.lock().expect("child lock");
            let _ = c.kill();
            let _ = c.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills a child once `deadline` passes unless told it is done.
pub(crate) fn watchdog(
    child: Arc<Mutex<std::process::Child>>,
    deadline: Instant,
) -> mpsc::Sender<()> {
    let (done, wait) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(mpsc::RecvTimeoutError::Timeout) = wait.recv_timeout(left) {
            let _ = child.lock().expect("child lock").kill();
        }
    });
    done
}

/// What the file is. Blocking: call it off the async threads.
pub fn probe(path: &Path, limits: &VideoLimits) -> Result<Probe, VideoError> {
    let mut cmd = bounded("ffprobe", limits);
    cmd.args([
        "-v",
        "error",
        "-print_format",
        "json",
        "-show_streams",
        "-show_format",
    ])
    .arg(path)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null());
    let mut child = cmd.spawn().map_err(|_| VideoError::NoDecoder)?;
    let mut stdout = child.stdout.take().expect("piped");
    let child = Arc::new(Mutex::new(child));
    let deadline = Instant::now() + limits.timeout.min(Duration::from_secs(20));
    let done = watchdog(child.clone(), deadline);
    let mut out = Vec::new();
    // a probe's answer is small: a file that makes it say megabytes is not one we take
    let read = (&mut stdout).take(4 << 20).read_to_end(&mut out);
    // (closed first: a probe still writing gets a broken pipe instead of blocking)
    drop(stdout);
    let status = reap(&child, deadline);
    let _ = done.send(());
    let Some(status) = status else {
        return Err(VideoError::TimedOut(limits.timeout.as_secs()));
    };
    if read.is_err() || out.len() >= 4 << 20 || !status.success() {
        return Err(VideoError::NotAVideo);
    }
    let info: serde_json::Value =
        serde_json::from_slice(&out).map_err(|_| VideoError::NotAVideo)?;
    let streams = info["streams"].as_array().cloned().unwrap_or_default();
    let video = streams
        .iter()
        .find(|s| s["codec_type"] == "video" && s["disposition"]["attached_pic"] != 1)
        .ok_or(if streams.is_empty() {
            VideoError::NotAVideo
        } else {
            VideoError::NoVideoStream
        })?;
    let (width, height, rotation) = shown_size(video).ok_or(VideoError::NotAVideo)?;
    let fps = video["avg_frame_rate"]
        .as_str()
        .and_then(|r| {
            let (a, b) = r.split_once('/')?;
            let (a, b): (f64, f64) = (a.parse().ok()?, b.parse().ok()?);
            (b > 0.0 && a > 0.0).then_some(a / b)
        })
        .filter(|f| (1.0..=1000.0).contains(f));
    let duration_s = number(&video["duration"]).or_else(|| number(&info["format"]["duration"]));
    let probe = Probe {
        width,
        height,
        codec: video["codec_name"].as_str().unwrap_or("").to_owned(),
        fps,
        duration_s,
        rotation,
    };
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(VideoError::TooLarge {
            width,
            height,
            max: limits.max_pixels,
        });
    }
    if let Some(seconds) = duration_s.filter(|&s| s > limits.max_seconds) {
        return Err(VideoError::TooLong {
            seconds,
            max: limits.max_seconds,
        });
    }
    Ok(probe)
}

/// A number in `ffprobe`'s JSON (it writes some as strings); none when absent or not finite.
pub(crate) fn number(v: &serde_json::Value) -> Option<f64> {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .filter(|x: &f64| x.is_finite())
}

/// A video stream's size as shown (after its rotation) and the rotation, from `ffprobe`'s JSON;
/// none when it has no size.
pub(crate) fn shown_size(video: &serde_json::Value) -> Option<(u32, u32, i32)> {
    let (w, h) = (
        video["width"].as_u64().unwrap_or(0) as u32,
        video["height"].as_u64().unwrap_or(0) as u32,
    );
    if w == 0 || h == 0 {
        return None;
    }
    let rotation = video["side_data_list"]
        .as_array()
        .and_then(|l| l.iter().find_map(|d| number(&d["rotation"])))
        .or_else(|| number(&video["tags"]["rotate"]))
        .unwrap_or(0.0) as i32;
    let (width, height) = if rotation.rem_euclid(180) == 90 {
        (h, w)
    } else {
        (w, h)
    };
    Some((width, height, rotation))
}

/// Decodes the file into grey frames with their presentation times. Blocking: call it off
/// the async threads. Stops (and kills the decoder) at the first limit passed.
pub fn decode(path: &Path, probe: &Probe, limits: &VideoLimits) -> Result<Clip, VideoError> {
    let pixels = u64::from(probe.width) * u64::from(probe.height);
    let scale: u32 = if pixels > MAX_STORED_PIXELS { 2 } else { 1 };
    let (w, h) = (
        (probe.width / scale) as usize,
        (probe.height / scale) as usize,
    );
    let mut filters = Vec::new();
    if probe.fps.is_some_and(|f| f > limits.max_fps + 0.5) {
        filters.push(format!("fps={}", limits.max_fps));
    }
    if scale != 1 {
        filters.push(format!("scale={w}:{h}:flags=area"));
    }
    filters.push("format=gray".into());
    // each frame's time (without checksums, which cost a tenth of the decode)
    filters.push("showinfo=checksum=0".into());
    let mut cmd = bounded("ffmpeg", limits);
    cmd.args(["-nostdin", "-hide_banner", "-loglevel", "info"])
        .args(["-threads", &limits.threads.max(1).to_string()])
        .arg("-i")
        .arg(path)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
        .args(["-vf", &filters.join(",")])
        .args(["-fps_mode", "passthrough", "-f", "rawvideo", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|_| VideoError::NoDecoder)?;
    let pid = child.id();
    let mut stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let child = Arc::new(Mutex::new(child));
    let deadline = Instant::now() + limits.timeout;
    let done = watchdog(child.clone(), deadline);
    // each frame's size and time, from showinfo on stderr
    let (info_tx, info) = mpsc::sync_channel::<(Option<(usize, usize)>, f64)>(4096);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let Some(t) = showinfo_time(&line) else {
                continue;
            };
            let size = line.find(" s:").and_then(|i| {
                let (a, b) = line[i + 3..].split_whitespace().next()?.split_once('x')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            });
            if info_tx.send((size, t)).is_err() {
                return;
            }
        }
    });
    let frame_bytes = w * h;
    // room for the frames the file says it has (growing by doubling would briefly need
    // twice the memory)
    let expected = match (probe.duration_s, probe.fps) {
        (Some(d), Some(fps)) => ((d * fps.min(limits.max_fps) * 1.05) as usize + 2) * frame_bytes,
        _ => 0,
    };
    let mut clip = Clip {
        width: w,
        height: h,
        scale: f64::from(scale),
        pixels: Vec::with_capacity(expected.min(limits.max_decoded_bytes as usize)),
        times: Vec::new(),
        decoder_peak_bytes: 0,
    };
    let mut failure = None;
    let mut first_time = None;
    // frames at most: the longest clip at the highest rate (timestamps a microsecond apart
    // must not make millions of them)
    let max_frames = (limits.max_seconds * limits.max_fps * 1.1).ceil() as usize + 2;
    loop {
        if clip.times.len() >= max_frames {
            failure = Some(VideoError::TooLong {
                seconds: clip.times.len() as f64 / limits.max_fps,
                max: limits.max_seconds,
            });
            break;
        }
        if (clip.pixels.len() + frame_bytes) as u64 > limits.max_decoded_bytes {
            failure = Some(VideoError::TooMuchData {
                max_mb: limits.max_decoded_bytes >> 20,
            });
            break;
        }
        let at = clip.pixels.len();
        clip.pixels.resize(at + frame_bytes, 0);
        if stdout.read_exact(&mut clip.pixels[at..]).is_err() {
            clip.pixels.truncate(at);
            break;
        }
        let (size, t) = info
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or((None, f64::NAN));
        if size.is_some_and(|s| s != (w, h)) {
            failure = Some(VideoError::Undecodable);
            break;
        }
        let t = if t.is_finite() {
            t
        } else {
            // no time said: the frame rate's
            clip.times.len() as f64 / probe.fps.unwrap_or(30.0)
        };
        let t0 = *first_time.get_or_insert(t);
        if t - t0 > limits.max_seconds {
            failure = Some(VideoError::TooLong {
                seconds: t - t0,
                max: limits.max_seconds,
            });
            break;
        }
        clip.times.push(t - t0);
        if clip.times.len() % 16 == 1 {
            clip.decoder_peak_bytes = clip.decoder_peak_bytes.max(peak_rss(pid));
        }
    }
    let timed_out = Instant::now() >= deadline;
    drop(stdout);
    let _ = child.lock().expect("child lock").kill();
    let _ = reap(&child, Instant::now() + Duration::from_secs(5));
    let _ = done.send(());
    if let Some(e) = failure {
        return Err(e);
    }
    if timed_out {
        return Err(VideoError::TimedOut(limits.timeout.as_secs()));
    }
    if clip.times.is_empty() {
        return Err(VideoError::Undecodable);
    }
    // presentation order is not always decode order in the times a filter saw: sort both
    if clip.times.windows(2).any(|p| p[1] < p[0]) {
        let mut order: Vec<usize> = (0..clip.times.len()).collect();
        order.sort_by(|&a, &b| clip.times[a].total_cmp(&clip.times[b]));
        let mut pixels = Vec::with_capacity(clip.pixels.len());
        for &i in &order {
            pixels.extend_from_slice(&clip.pixels[i * frame_bytes..(i + 1) * frame_bytes]);
        }
        clip.times = order.iter().map(|&i| clip.times[i]).collect();
        clip.pixels = pixels;
    }
    Ok(clip)
}

/// The frame time on a line of FFmpeg's `showinfo` output (NaN when it cannot be read); none
/// for a line without one.
pub(crate) fn showinfo_time(line: &str) -> Option<f64> {
    let at = line.find("pts_time:")?;
    Some(
        line[at + 9..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN),
    )
}

/// A process's largest resident memory so far, in bytes (0 when it cannot be read).
pub fn peak_rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
            let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kb * 1024)
        })
        .unwrap_or(0)
}
