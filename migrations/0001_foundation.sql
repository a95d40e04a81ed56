-- C3S foundation: users and their sessions, permissions, locating methods, scenes, pixels and
-- frames. Every rule that the data must keep is a constraint here, not only in Rust.

-- "user" is a reserved word in SQL; the table is app_user so no query has to quote it.
create table app_user (
    user_id       uuid primary key default gen_random_uuid(),
    -- null for a guest phone, which has a device token and no password
    login         text unique check (login ~ '^[a-z0-9_.-]{3,64}$'),
    display_name  text not null check (char_length(display_name) between 1 and 100),
    password_hash text,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    -- an account has both a login and a password, a guest has neither
    check ((login is null) = (password_hash is null))
);

-- Bearer tokens: login sessions and phones' device tokens. Only a SHA-256 of the token is kept,
-- so a copy of this table lets nobody in.
create table session (
    session_id  uuid primary key default gen_random_uuid(),
    user_id     uuid not null references app_user on delete cascade,
    token_hash  bytea not null unique check (octet_length(token_hash) = 32),
    kind        text not null check (kind in ('login', 'device')),
    created_at  timestamptz not null default now(),
    expires_at  timestamptz not null,
    revoked_at  timestamptz,
    check (expires_at > created_at)
);
create index session_user_idx on session (user_id);

create table permission (
    permission_id smallint primary key,
    code          text not null unique check (code ~ '^[a-z_]+$'),
    description   text not null
);
insert into permission (permission_id, code, description) values
    (1, 'pixel',    'be a pixel in a scene (granted on join)'),
    (2, 'observer', 'locate phones: photograph the crowd, tap phones onto the map'),
    (3, 'operator', 'manage a scene: frames, shows, playback, its people'),
    (4, 'kick',     'remove a phone from a scene'),
    (5, 'admin',    'everything, everywhere; grant any permission');

create table location_method (
    location_method_id smallint primary key,
    code               text not null unique check (code ~ '^[a-z_]+$'),
    description        text not null
);
insert into location_method (location_method_id, code, description) values
    (1, 'qr',       'a QR code on the phone, found in an observer''s photo'),
    (2, 'gps',      'the phone''s own position from the browser'),
    (3, 'observer', 'an observer taps the phone onto the scene map'),
    (4, 'seat',     'the phone user types their seat number');

create table scene (
    scene_id     uuid primary key default gen_random_uuid(),
    owner_id     uuid not null references app_user on delete restrict,
    name         text not null check (char_length(name) between 1 and 200),
    description  text not null default '' check (char_length(description) <= 5000),
    venue        text not null default '' check (char_length(venue) <= 500),
    width        double precision not null check (width > 0 and width <= 1e6),
    height       double precision not null check (height > 0 and height <= 1e6),
    status       text not null default 'draft' check (status in ('draft', 'open', 'live', 'ended')),
    -- colour an unlocated phone shows, 0xRRGGBB
    idle_color   integer not null default 0 check (idle_color between 0 and 16777215),
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create index scene_owner_idx on scene (owner_id);
create index scene_created_idx on scene (created_at desc, scene_id);

-- The locating methods a scene allows (one method, many scenes).
create table scene_location_method (
    scene_id           uuid not null references scene on delete cascade,
    location_method_id smallint not null references location_method,
    primary key (scene_id, location_method_id)
);

-- A grant is global (scene_id null) or scoped to one scene.
create table user_permission (
    user_permission_id bigint generated always as identity primary key,
    user_id            uuid not null references app_user on delete cascade,
    permission_id      smallint not null references permission,
    scene_id           uuid references scene on delete cascade,
    granted_by         uuid references app_user on delete set null,
    created_at         timestamptz not null default now(),
    unique nulls not distinct (user_id, permission_id, scene_id)
);
create index user_permission_scene_idx on user_permission (scene_id);

-- A phone (its user) in a scene.
create table pixel (
    pixel_id           uuid primary key default gen_random_uuid(),
    scene_id           uuid not null references scene on delete cascade,
    user_id            uuid not null references app_user on delete cascade,
    x                  double precision,
    y                  double precision,
    location_method_id smallint references location_method,
    confidence         real check (confidence between 0 and 1),
    status             text not null default 'joined' check (status in ('joined', 'located', 'kicked')),
    created_at         timestamptz not null default now(),
    updated_at         timestamptz not null default now(),
    unique (scene_id, user_id),
    -- a position is whole or absent, and comes with the method that found it
    check ((x is null) = (y is null)),
    check ((x is null) = (location_method_id is null)),
    check ((x is null) = (confidence is null)),
    check (status <> 'located' or x is not null)
);
create index pixel_scene_idx on pixel (scene_id, status);

-- A frame's image bytes live in GridFS; this row is its metadata, one-to-one with the file.
create table frame (
    frame_id      uuid primary key default gen_random_uuid(),
    scene_id      uuid not null references scene on delete cascade,
    -- position in the scene's frame order; deferred so a reorder can swap positions in one
    -- transaction
    position      integer not null check (position >= 0),
    duration_ms   integer not null check (duration_ms between 1 and 3600000),
    width         integer not null check (width > 0),
    height        integer not null check (height > 0),
    content_type  text not null check (content_type in ('image/png', 'image/jpeg', 'image/gif', 'image/webp')),
    byte_size     bigint not null check (byte_size > 0),
    sha256        bytea not null check (octet_length(sha256) = 32),
    gridfs_id     text not null unique check (gridfs_id ~ '^[0-9a-f]{24}$'),
    original_name text not null default '' check (char_length(original_name) <= 255),
    created_at    timestamptz not null default now(),
    constraint frame_position_unique unique (scene_id, position) deferrable initially deferred
);
