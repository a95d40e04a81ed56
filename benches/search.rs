//! Search over the calendar: 100 000 scheduled scenes across 1000 venues, queried through the
//! real HTTP endpoint, uncached and cached.
//!
//! `scripts/bench search` (or `cargo bench --bench search` with the environment of
//! `scripts/test`). Prints one JSON line per case and a final summary line:
//! `{"bench":"search","scenes":100000,"venues":1000,"uncached_ms":{"p50":..,"p95":..},"cached_ms":{..}}`.

use std::time::{Duration, Instant};

use c3s::app::App;
use c3s::config::Config;
use c3s::testkit::{fresh_database, shared_mongodb_url};
use chrono::Utc;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SCENES: i64 = 100_000;
const VENUES: i64 = 1000;
const UNCACHED: usize = 500;
const CACHED_DISTINCT: usize = 50;
const CACHED_ROUNDS: usize = 20;

const GENRES: [&str; 40] = [
    "rock",
    "jazz",
    "techno",
    "opera",
    "folk",
    "metal",
    "indie",
    "blues",
    "soul",
    "funk",
    "reggae",
    "punk",
    "disco",
    "house",
    "trance",
    "ambient",
    "gospel",
    "choir",
    "ballet",
    "circus",
    "comedy",
    "poetry",
    "cinema",
    "fireworks",
    "lights",
    "drones",
    "football",
    "hockey",
    "marathon",
    "parade",
    "festival",
    "carnival",
    "derby",
    "gala",
    "premiere",
    "finale",
    "tribute",
    "acoustic",
    "orchestra",
    "karaoke",
];
const CITIES: [(&str, f64, f64); 20] = [
    ("Helsinki", 60.17, 24.94),
    ("Tampere", 61.50, 23.77),
    ("Turku", 60.45, 22.27),
    ("Oulu", 65.01, 25.47),
    ("Stockholm", 59.33, 18.07),
    ("Oslo", 59.91, 10.75),
    ("Copenhagen", 55.68, 12.57),
    ("Tallinn", 59.44, 24.75),
    ("Riga", 56.95, 24.11),
    ("Berlin", 52.52, 13.40),
    ("Hamburg", 53.55, 9.99),
    ("Warsaw", 52.23, 21.01),
    ("Prague", 50.08, 14.44),
    ("Vienna", 48.21, 16.37),
    ("Munich", 48.14, 11.58),
    ("Paris", 48.86, 2.35),
    ("Amsterdam", 52.37, 4.90),
    ("London", 51.51, -0.13),
    ("Madrid", 40.42, -3.70),
    ("Rome", 41.90, 12.50),
];
const FEATURES: [&str; 9] = [
    "step_free",
    "wheelchair_spaces",
    "hearing_loop",
    "quiet_zone",
    "accessible_toilets",
    "sign_language",
    "audio_description",
    "assistance_dogs",
    "large_print",
];

fn percentiles(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    let at = |p: f64| (ms[((ms.len() - 1) as f64 * p).round() as usize] * 1000.0).round() / 1000.0;
    json!({"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "n": ms.len()})
}

/// A mixed query: the kinds a fan and an organizer ask, over the whole data.
fn query(i: usize, from: chrono::DateTime<Utc>) -> String {
    let genre = GENRES[(i * 7) % GENRES.len()];
    let (_, lat, lon) = CITIES[(i * 3) % CITIES.len()];
    let from = from.to_rfc3339().replace('+', "%2B");
    let to = (Utc::now() + chrono::Duration::days(30))
        .to_rfc3339()
        .replace('+', "%2B");
    let feature = FEATURES[i % FEATURES.len()];
    match i % 5 {
        0 => format!("q={genre}&lat={lat}&lon={lon}&radius_km=100&from={from}&to={to}"),
        1 => format!("q={genre}&from={from}"),
        2 => format!("lat={lat}&lon={lon}&radius_km=50&from={from}&to={to}"),
        3 => format!("from={from}&to={to}&features={feature}"),
        _ => format!(
            "q={genre}+-rock&lat={lat}&lon={lon}&radius_km=300&from={from}&features={feature}"
        ),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::for_tests(
        fresh_database().await?,
        shared_mongodb_url(),
        format!("c3s_bench_{}", uuid::Uuid::new_v4().simple()),
    );
    let app = App::build(config).await?;
    let base = format!("http://{}", app.local_addr());
    let db = app.state().db.clone();
    let stop = CancellationToken::new();
    tokio::spawn(app.run(stop.clone()));

    let seeding = Instant::now();
    let owner: uuid::Uuid = sqlx::query_scalar(
        "insert into app_user (login, display_name, password_hash) values ('bench', 'bench', 'x')
         returning user_id",
    )
    .fetch_one(&db)
    .await?;
    let organizer: uuid::Uuid =
        sqlx::query_scalar("insert into organizer (name) values ('Bench') returning organizer_id")
            .fetch_one(&db)
            .await?;
    let (names, lats, lons): (Vec<&str>, Vec<f64>, Vec<f64>) = {
        let mut n = Vec::new();
        let mut a = Vec::new();
        let mut o = Vec::new();
        for (name, lat, lon) in CITIES {
            n.push(name);
            a.push(lat);
            o.push(lon);
        }
        (n, a, o)
    };
    // venues spread within ~50 km of 20 cities
    sqlx::query(
        "insert into venue (organizer_id, name, address, lat, lon, capacity)
         select $1, c.name || ' ' || (array['Arena','Hall','Stadium','Park','Club'])[1 + i % 5] || ' ' || i,
                'Street ' || i || ', ' || c.name,
                c.lat + ((i * 37) % 100 - 50) / 220.0, c.lon + ((i * 53) % 100 - 50) / 120.0,
                500 + (i * 97) % 60000
         from generate_series(0, $5 - 1) i
         join (select * from unnest($2::text[], $3::float8[], $4::float8[]) with ordinality
               as c(name, lat, lon, n)) c on c.n = 1 + i % 20",
    )
    .bind(organizer)
    .bind(&names)
    .bind(&lats)
    .bind(&lons)
    .bind(VENUES)
    .execute(&db)
    .await?;
    sqlx::query(
        "insert into venue_feature (venue_id, feature_id)
         select v.venue_id, f.feature_id from venue v cross join accessibility_feature f
         where abs(hashtext(v.venue_id::text || f.code)) % 3 = 0",
    )
    .execute(&db)
    .await?;
    let genres: Vec<&str> = GENRES.to_vec();
    sqlx::query(
        "insert into scene (owner_id, organizer_id, name, description, width, height, status,
             venue_id, starts_at, ends_at, capacity)
         select $1, $2,
                initcap(g.a) || ' ' || g.b || ' night ' || i,
                'A ' || g.b || ' show with ' || g.a || ' and lights', 100, 50, 'open',
                v.venue_id, now() + make_interval(hours => ((i * 7919) % 8760)::int),
                now() + make_interval(hours => ((i * 7919) % 8760)::int + 3), 500
         from generate_series(0, $3 - 1) i
         join (select venue_id, (row_number() over (order by venue_id) - 1)::int as n from venue) v
           on v.n = (i * 31) % $4
         cross join lateral (select $5::text[] as words) w
         cross join lateral (select w.words[1 + i % 40] as a, w.words[1 + (i / 40) % 40] as b) g",
    )
    .bind(owner)
    .bind(organizer)
    .bind(SCENES)
    .bind(VENUES)
    .bind(&genres)
    .execute(&db)
    .await?;
    sqlx::query("analyze").execute(&db).await?;
    println!(
        "{}",
        json!({"bench": "search", "case": "seeded", "scenes": SCENES, "venues": VENUES, "seconds": (seeding.elapsed().as_secs_f64() * 10.0).round() / 10.0})
    );

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let get = |q: String| {
        let request = client.get(format!("{base}/api/search?{q}")).send();
        async move {
            let started = Instant::now();
            let resp = request.await?.error_for_status()?;
            let cache = resp
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body: serde_json::Value = resp.json().await?;
            let ms = started.elapsed().as_secs_f64() * 1000.0;
            anyhow::Ok((ms, cache, body["items"].as_array().map_or(0, Vec::len)))
        }
    };
    // warm the connection and PostgreSQL's buffers a little, like a running server
    for i in 0..20 {
        get(query(i, Utc::now())).await?;
    }

    // uncached: every query distinct (its own `from` second), so each one misses
    let start = Utc::now();
    let mut uncached = Vec::new();
    let mut results = 0;
    for i in 0..UNCACHED {
        let (ms, cache, n) = get(query(i, start + chrono::Duration::seconds(i as i64))).await?;
        anyhow::ensure!(cache == "miss", "expected a miss");
        uncached.push(ms);
        results += n;
    }
    let uncached = percentiles(uncached);
    println!(
        "{}",
        json!({"bench": "search", "case": "uncached, mixed queries over HTTP", "ms": uncached, "mean_results": results / UNCACHED})
    );

    // cached: a set of hot queries asked again and again
    let hot: Vec<String> = (0..CACHED_DISTINCT).map(|i| query(i, start)).collect();
    for q in &hot {
        get(q.clone()).await?;
    }
    let mut cached = Vec::new();
    for _ in 0..CACHED_ROUNDS {
        for q in &hot {
            let (ms, cache, _) = get(q.clone()).await?;
            anyhow::ensure!(cache == "hit", "expected a hit");
            cached.push(ms);
        }
    }
    let cached = percentiles(cached);
    println!(
        "{}",
        json!({"bench": "search", "case": "cached, hot queries over HTTP", "ms": cached})
    );
    println!(
        "{}",
        json!({"bench": "search", "scenes": SCENES, "venues": VENUES, "uncached_ms": uncached, "cached_ms": cached,
               "goal": {"uncached_p95_ms": 20, "cached_p95_ms": 1}})
    );
    stop.cancel();
    Ok(())
}
