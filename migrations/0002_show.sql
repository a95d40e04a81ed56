-- A scene's show (its frames snapshotted in order, with durations) and the playback timeline
-- that every node computes colours from. One show per scene; every command bumps `version`.
create table show (
    scene_id   uuid primary key references scene on delete cascade,
    version    bigint not null default 0 check (version >= 0),
    -- [{frame_id, sha256, gridfs_id, duration_ms, width, height}, ...] in show order
    frames     jsonb not null check (jsonb_typeof(frames) = 'array'),
    looped     boolean not null default false,
    -- {version, current: {mode, anchor_ms, base_ms, effective_ms}, previous: {...}}
    timeline   jsonb not null check (jsonb_typeof(timeline) = 'object'),
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
