-- Locating by sound (src/locate/sound.rs, docs/sound.md): a scene's beacons (loudspeakers at
-- known places), the scale and air temperature the solver needs, and listening sessions with
-- the phones each one told to listen.
insert into location_method (location_method_id, code, description) values
    (6, 'sound', 'the phone hears the beacons'' chirps; the arrival differences give its place');

-- metres per scene unit, and the air temperature (the speed of sound)
create table sound_setup (
    scene_id        uuid primary key references scene on delete cascade,
    metres_per_unit double precision not null check (metres_per_unit > 0 and metres_per_unit <= 1000),
    temperature_c   double precision not null default 20 check (temperature_c between -40 and 60),
    updated_at      timestamptz not null default now()
);

create table beacon (
    beacon_id  uuid primary key default gen_random_uuid(),
    scene_id   uuid not null references scene on delete cascade,
    -- which chirp it plays and when in a session's period (docs/sound.md): 0 to 7
    slot       smallint not null check (slot between 0 and 7),
    name       text not null,
    x          double precision not null,
    y          double precision not null,
    -- SHA-256 of the beacon page's key (the key itself is shown once, at creation)
    key_sha256 bytea not null,
    created_at timestamptz not null default now(),
    unique (scene_id, slot)
);

create table sound_session (
    sound_session_id uuid primary key default gen_random_uuid(),
    scene_id         uuid not null references scene on delete cascade,
    created_by       uuid references app_user on delete set null,
    unlocated_only   boolean not null,
    -- server time of the first chirp's slot, µs since the Unix epoch; the schedule's shape
    starts_at_us     bigint not null,
    period_us        integer not null check (period_us > 0),
    slot_us          integer not null check (slot_us > 0),
    repeats          smallint not null check (repeats between 1 and 10),
    -- the beacons as the session was started: [{slot, x_m, y_m}] (a beacon moved or deleted
    -- later does not change what the phones heard)
    beacons          jsonb not null,
    metres_per_unit  double precision not null,
    speed_m_s        double precision not null,
    phones           integer not null default 0 check (phones >= 0),
    created_at       timestamptz not null default now()
);
create index sound_session_scene_idx on sound_session (scene_id, created_at);

-- Every phone told to listen, and what its report came to (null until it reported).
create table sound_listener (
    sound_session_id uuid not null references sound_session on delete cascade,
    pixel_id         uuid not null references pixel on delete cascade,
    reported_at      timestamptz,
    placed           boolean,
    primary key (sound_session_id, pixel_id)
);
