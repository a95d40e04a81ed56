//! A mutation fuzzer for the parsers that take what clients send, on stable Rust:
//! the phone message parser (`ClientMsg`), the colour chunk decoder, the seat-map CSV and the
//! image upload check (`frames::prepare_upload`). `cargo fuzz` needs a nightly toolchain,
//! which the project's machines do not have; this runs the same kind of targets with seeded
//! random mutations (bit flips, byte inserts and deletes, splices of seeds, interesting
//! values, truncations) for a bounded time, catches every panic, flags every input that takes
//! longer than a second, and saves those inputs to `target/fuzz-findings/`.
//!
//! `scripts/fuzz [SECONDS_PER_TARGET] [SEED]` runs it (release build); the last line printed
//! is JSON: executions, panics and slow inputs per target.

use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use c3s::dataplane::chunk;
use c3s::dataplane::protocol::ClientMsg;
use c3s::frames::{prepare_upload, UploadLimits};
use c3s::locate::seat;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// An input slower than this is a finding (a parser must never hang on hostile input).
const SLOW: Duration = Duration::from_secs(1);
/// Longest input a mutation may make.
const MAX_INPUT_BYTES: usize = 256 * 1024;

struct Target {
    name: &'static str,
    seeds: Vec<Vec<u8>>,
    run: fn(&[u8]),
}

fn phone_message(input: &[u8]) {
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = serde_json::from_str::<ClientMsg>(text);
    }
}

fn colour_chunk(input: &[u8]) {
    if let Ok(chunk) = chunk::decode(input) {
        // whatever decodes must be usable: its entries are in its window
        for (t, _) in &chunk.entries {
            let _ = t.checked_sub(chunk.start_ms);
        }
    }
}

fn seat_map(input: &[u8]) {
    let _ = seat::parse(input, 1000.0, 1000.0);
}

fn image_upload(input: &[u8]) {
    let limits = UploadLimits {
        max_pixels: 4_000_000,
        max_animation_frames: 50,
        max_animation_pixels: 20_000_000,
    };
    let _ = prepare_upload(input.to_vec(), None, limits);
}

fn image_seeds() -> Vec<Vec<u8>> {
    let img = image::RgbaImage::from_fn(6, 4, |x, y| {
        image::Rgba([x as u8 * 40, y as u8 * 60, 7, 255])
    });
    let mut seeds = Vec::new();
    for format in [
        image::ImageFormat::Png,
        image::ImageFormat::Gif,
        image::ImageFormat::WebP,
    ] {
        let mut out = Vec::new();
        image::DynamicImage::ImageRgba8(img.clone())
            .write_to(&mut Cursor::new(&mut out), format)
            .expect("encode a seed");
        seeds.push(out);
    }
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(image::DynamicImage::ImageRgba8(img.clone()).to_rgb8())
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .expect("encode a seed");
    seeds.push(jpeg);
    // an animated GIF of three frames
    let mut gif = Vec::new();
    {
        let mut encoder = image::codecs::gif::GifEncoder::new(&mut gif);
        for i in 0..3u8 {
            let frame = image::Frame::from_parts(
                image::RgbaImage::from_pixel(5, 5, image::Rgba([i * 80, 0, 0, 255])),
                0,
                0,
                image::Delay::from_numer_denom_ms(50, 1),
            );
            encoder.encode_frame(frame).expect("encode a seed frame");
        }
    }
    seeds.push(gif);
    seeds
}

fn chunk_seeds() -> Vec<Vec<u8>> {
    let mut one = Vec::new();
    chunk::push_header(&mut one, 3, 1_700_000_000_000, 500);
    for (dt, rgb) in [(0, [1, 2, 3]), (100, [255, 0, 0]), (250, [0, 0, 255])] {
        chunk::push_entry(&mut one, dt, rgb);
    }
    let mut empty = Vec::new();
    chunk::push_header(&mut empty, 1, 0, 0);
    vec![one, empty]
}

fn targets() -> Vec<Target> {
    let text = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
    vec![
        Target {
            name: "phone_message",
            seeds: text(&[
                r#"{"type":"hello","protocol":1,"token":"abc"}"#,
                r#"{"type":"sync","t0":12345.678}"#,
                r#"{"type":"sync_report","error_ms":0.5,"offset_ms":-3.25}"#,
                r#"{"type":"seat","section":"A","row":"1","seat":"14"}"#,
                r#"{"type":"gps","lat":55.75,"lon":37.61,"accuracy_m":8}"#,
                r#"{"type":"show_qr"}"#,
            ]),
            run: phone_message,
        },
        Target {
            name: "colour_chunk",
            seeds: chunk_seeds(),
            run: colour_chunk,
        },
        Target {
            name: "seat_map",
            seeds: text(&[
                "section,row,seat,x,y\nA,1,1,10,5\nA,1,2,11,5\n",
                "\u{feff}section;row;seat;x;y\nB;7;14;50,5;30,25\n",
                "\"A \"\"north\"\"\",1,1,1,1\n",
            ]),
            run: seat_map,
        },
        Target {
            name: "image_upload",
            seeds: image_seeds(),
            run: image_upload,
        },
    ]
}

/// One mutation of a seed (or of a splice of two).
fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
    let mut input = seeds[rng.gen_range(0..seeds.len())].clone();
    for _ in 0..rng.gen_range(1..=8) {
        let len = input.len();
        match rng.gen_range(0..7) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                input[i] = [0, 0xff, 0x7f, 0x80, b'"', b'\\', b',', b'\n'][rng.gen_range(0..8)];
            }
            2 => {
                let i = rng.gen_range(0..=len);
                let n = rng.gen_range(1..=16);
                let bytes: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                input.splice(i..i, bytes);
            }
            3 if len > 0 => {
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(64));
                input.drain(i..i + n);
            }
            4 => {
                // a splice: the head of this input and the tail of another seed
                let other = &seeds[rng.gen_range(0..seeds.len())];
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..=other.len());
                input.truncate(cut);
                input.extend_from_slice(&other[from..]);
            }
            5 if len > 0 => {
                // a block repeated (long runs, deep nesting)
                let i = rng.gen_range(0..len);
                let n = rng.gen_range(1..=(len - i).min(32));
                let block = input[i..i + n].to_vec();
                for _ in 0..rng.gen_range(1..64) {
                    input.splice(i..i, block.iter().copied());
                }
            }
            _ => input.truncate(rng.gen_range(0..=len)),
        }
        input.truncate(MAX_INPUT_BYTES);
    }
    input
}

fn main() {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);
    let seed: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let findings = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fuzz-findings");
    // a panic is a finding, reported below; its default message would flood the output
    std::panic::set_hook(Box::new(|_| {}));
    let mut report = Vec::new();
    let mut total_findings = 0;
    for target in targets() {
        let mut rng = StdRng::seed_from_u64(seed);
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let (mut execs, mut panics, mut slow) = (0u64, 0u64, 0u64);
        let mut slowest = Duration::ZERO;
        // the seeds first, as they are
        let mut queue: Vec<Vec<u8>> = target.seeds.clone();
        while Instant::now() < deadline {
            let input = queue
                .pop()
                .unwrap_or_else(|| mutate(&mut rng, &target.seeds));
            let started = Instant::now();
            let outcome = catch_unwind(AssertUnwindSafe(|| (target.run)(&input)));
            let took = started.elapsed();
            slowest = slowest.max(took);
            execs += 1;
            let finding = match (outcome.is_err(), took > SLOW) {
                (true, _) => {
                    panics += 1;
                    Some("panic")
                }
                (false, true) => {
                    slow += 1;
                    Some("slow")
                }
                _ => None,
            };
            if let Some(kind) = finding {
                total_findings += 1;
                let _ = std::fs::create_dir_all(&findings);
                let file = findings.join(format!("{}-{kind}-{execs}", target.name));
                let _ = std::fs::write(&file, &input);
                eprintln!(
                    "{}: {kind} ({took:?}), input saved to {}",
                    target.name,
                    file.display()
                );
            }
        }
        eprintln!(
            "{}: {execs} inputs, {panics} panics, {slow} slower than {SLOW:?}, slowest {slowest:?}",
            target.name
        );
        report.push(serde_json::json!({
            "target": target.name, "execs": execs, "panics": panics, "slow": slow,
            "slowest_ms": slowest.as_secs_f64() * 1000.0,
        }));
    }
    println!(
        "{}",
        serde_json::json!({"bench": "fuzz", "seconds_per_target": seconds, "seed": seed,
            "targets": report, "findings": total_findings})
    );
    if total_findings > 0 {
        std::process::exit(1);
    }
}
