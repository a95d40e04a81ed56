-- What each node last reported of its phones, per scene, so that any node can tell an
-- operator the whole scene's presence. Ephemeral: rewritten every few seconds, lost on a
-- crash without harm (unlogged), and rows of a node that stopped reporting are ignored.
create unlogged table node_presence (
    node_id    uuid not null,
    scene_id   uuid not null,
    connected  integer not null check (connected >= 0),
    located    integer not null check (located >= 0),
    synced     integer not null check (synced >= 0),
    -- counts per sync-error bucket, in the order of the API's histogram
    histogram  integer[] not null,
    updated_at timestamptz not null default now(),
    primary key (node_id, scene_id)
);
create index node_presence_scene_idx on node_presence (scene_id, updated_at);
