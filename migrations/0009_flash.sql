-- Flash locating (src/locate/flash): sessions in which every phone of a scene flashes a code
-- word of its own while an observer films, and the code words each session issued.
insert into location_method (location_method_id, code, description) values
    (5, 'flash', 'the phone flashes its code in lock-step with the crowd while an observer films');

-- scenes that locate by an observer's photo of QR codes may use an observer's clip as well
insert into scene_location_method (scene_id, location_method_id)
select scene_id, 5 from scene_location_method where location_method_id = 1
on conflict do nothing;

create table flash_session (
    flash_session_id uuid primary key default gen_random_uuid(),
    scene_id         uuid not null references scene on delete cascade,
    created_by       uuid references app_user on delete set null,
    unlocated_only   boolean not null,
    -- server time of the first slot, µs since the Unix epoch, and a slot's length
    starts_at_us     bigint not null,
    symbol_us        integer not null check (symbol_us between 20000 and 500000),
    slots            integer not null check (slots > 0),
    -- phones issued a code word (counted over every node)
    phones           integer not null default 0 check (phones >= 0),
    created_at       timestamptz not null default now()
);
create index flash_session_scene_idx on flash_session (scene_id, created_at);

-- A code word identifies one phone within one session; drawn at random, so a code read from
-- another session's clip, or made up, names nobody (but with a chance of phones / 20^9).
create table flash_code (
    flash_session_id uuid not null references flash_session on delete cascade,
    code             bigint not null check (code >= 0),
    pixel_id         uuid not null references pixel on delete cascade,
    primary key (flash_session_id, code),
    unique (flash_session_id, pixel_id)
);
