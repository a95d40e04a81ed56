-- The scene event log (event sourcing in plain SQL, after fstore-sql): every command that
-- changes a scene appends an event here, in the same transaction as its effect on the tables
-- above. Nodes follow the log (LISTEN/NOTIFY, with polling as the fallback) to keep their hubs
-- in step; named views consume it in order with a lease per scene.

-- Event types a decider may publish. An event of an unregistered type is refused.
create table event_type (
    decider     text not null check (decider ~ '^[a-z_]+$'),
    event       text not null check (event ~ '^[a-z_]+$'),
    description text not null,
    primary key (decider, event)
);
insert into event_type (decider, event, description) values
    ('scene', 'scene_created',  'a scene was created'),
    ('scene', 'scene_updated',  'a scene''s fields or status changed (ended included)'),
    ('scene', 'scene_deleted',  'a scene was deleted'),
    ('scene', 'show_built',     'the show was (re)built from frames; playback stopped'),
    ('scene', 'playback',       'play, pause, resume, seek or stop: a new timeline'),
    ('scene', 'pixel_located',  'a phone was placed on the scene'),
    ('scene', 'pixel_kicked',   'a phone was removed from the scene'),
    ('scene', 'frames_added',   'frames were uploaded'),
    ('scene', 'frame_updated',  'a frame''s duration changed'),
    ('scene', 'frame_deleted',  'a frame was deleted'),
    ('scene', 'frames_reordered', 'the frames were put in a new order'),
    ('scene', 'seats_replaced', 'the seat map was imported'),
    ('scene', 'geo_reference_set', 'the scene''s GPS reference points were set');

-- Append-only. `seq` orders all events; within one scene, `previous_id` chains each event to
-- the one before it, and is unique: two commands decided on the same state cannot both be
-- appended (optimistic concurrency). The first event of a scene has no previous one.
create table scene_event (
    seq         bigint generated always as identity primary key,
    event_id    uuid not null unique,
    decider     text not null default 'scene',
    event       text not null,
    -- no foreign key to scene: the log outlives a deleted scene
    scene_id    uuid not null,
    previous_id uuid unique,
    data        jsonb not null check (jsonb_typeof(data) = 'object'),
    -- who commanded it; null for a phone locating itself or the server
    actor_id    uuid,
    created_at  timestamptz not null default clock_timestamp(),
    foreign key (decider, event) references event_type,
    constraint scene_event_in_scene unique (scene_id, event_id),
    -- the previous event belongs to the same scene
    foreign key (scene_id, previous_id) references scene_event (scene_id, event_id),
    check (previous_id is distinct from event_id)
);
create unique index scene_event_first_idx on scene_event (scene_id) where previous_id is null;
create index scene_event_scene_idx on scene_event (scene_id, seq);
create index scene_event_kind_idx on scene_event (scene_id, event, seq);

create function scene_event_refuse_change() returns trigger language plpgsql as $$
begin
    raise exception 'scene_event is append-only: % refused', tg_op
        using errcode = 'restrict_violation';
end
$$;
create trigger scene_event_no_update_or_delete before update or delete on scene_event
    for each row execute function scene_event_refuse_change();
create trigger scene_event_no_truncate before truncate on scene_event
    for each statement execute function scene_event_refuse_change();

-- Named consumers. Each keeps, per scene, how far it has acknowledged and a lease: a batch
-- claimed and not acknowledged within `lease_ms` is delivered again.
create table event_view (
    view       text primary key check (view ~ '^[a-z_]+$'),
    lease_ms   integer not null default 10000 check (lease_ms between 50 and 3600000),
    created_at timestamptz not null default now()
);

create table event_lock (
    view         text not null references event_view on delete cascade,
    scene_id     uuid not null,
    acked_seq    bigint not null default 0,
    last_seq     bigint not null,
    locked_until timestamptz,
    lock_token   uuid,
    primary key (view, scene_id),
    check ((locked_until is null) = (lock_token is null))
);
create index event_lock_pending_idx on event_lock (view, last_seq) where acked_seq < last_seq;

-- After each insert statement: every view learns the scenes' new last event, and every node
-- is told (one notification per scene per statement).
create function scene_event_appended() returns trigger language plpgsql as $$
declare
    appended record;
begin
    insert into event_lock (view, scene_id, last_seq)
    select v.view, n.scene_id, max(n.seq)
    from new_events n cross join event_view v
    group by v.view, n.scene_id
    on conflict (view, scene_id)
        do update set last_seq = greatest(event_lock.last_seq, excluded.last_seq);
    for appended in select scene_id, max(seq) as seq from new_events group by scene_id loop
        perform pg_notify('c3s_scene_event',
            json_build_object('scene_id', appended.scene_id, 'seq', appended.seq)::text);
    end loop;
    return null;
end
$$;
create trigger scene_event_appended after insert on scene_event
    referencing new table as new_events
    for each statement execute function scene_event_appended();

-- Shows built before the log existed become each scene's first event.
insert into scene_event (event_id, event, scene_id, data)
select gen_random_uuid(), 'show_built', s.scene_id,
       jsonb_build_object(
           'show', jsonb_build_object('frames', s.frames, 'loop', s.looped),
           'timeline', s.timeline)
from show s;

-- The operator's summary of a scene, kept by the `scene_summary` view.
create table scene_summary (
    scene_id          uuid primary key,
    events            bigint not null default 0,
    last_seq          bigint not null default 0,
    last_event_at     timestamptz,
    show_version      bigint not null default 0,
    playback_commands bigint not null default 0,
    located           bigint not null default 0,
    kicked            bigint not null default 0
);
insert into event_view (view, lease_ms) values ('scene_summary', 10000);
insert into event_lock (view, scene_id, last_seq)
select 'scene_summary', scene_id, max(seq) from scene_event group by scene_id;
