-- Locating: every method's observations, the scene's geo-reference for GPS, and its seat map.

create table observation (
    observation_id     bigint generated always as identity primary key,
    scene_id           uuid not null references scene on delete cascade,
    pixel_id           uuid not null references pixel on delete cascade,
    x                  double precision not null,
    y                  double precision not null,
    location_method_id smallint not null references location_method,
    confidence         real not null check (confidence between 0 and 1),
    -- who made it (an observer's tap or photo); null when the phone located itself
    observer_id        uuid references app_user on delete set null,
    -- set when it disagreed with where the pixel was: the distance, for the observer to check
    contradiction      double precision check (contradiction is null or contradiction > 0),
    created_at         timestamptz not null default now()
);
create index observation_pixel_idx on observation (pixel_id, created_at desc);
create index observation_flagged_idx on observation (scene_id) where contradiction is not null;

-- Three or more (lat, lon) <-> scene points, and how accurate a phone's GPS must be.
create table scene_geo_reference (
    scene_id    uuid primary key references scene on delete cascade,
    points      jsonb not null check (jsonb_typeof(points) = 'array' and jsonb_array_length(points) >= 3),
    accuracy_m  double precision not null check (accuracy_m > 0),
    updated_at  timestamptz not null default now()
);

-- Seats as people name them (normalised to upper case) and where they are in the scene.
create table seat (
    scene_id  uuid not null references scene on delete cascade,
    section   text not null check (section <> ''),
    row_name  text not null check (row_name <> ''),
    seat      text not null check (seat <> ''),
    x         double precision not null,
    y         double precision not null,
    primary key (scene_id, section, row_name, seat)
);
