-- The nodes that are up: each writes its row every few seconds (a heartbeat) and removes it
-- when it stops. A node sending a signal to single phones (identify, show your QR code) waits
-- for an answer from every node seen recently, so it can say how many phones it reached.
-- Ephemeral, like node_presence: unlogged, and a crashed node's row is simply not fresh.
create unlogged table node (
    node_id    uuid primary key,
    started_at timestamptz not null default now(),
    seen_at    timestamptz not null default now()
);
create index node_seen_idx on node (seen_at);
