-- Organizers, venues, the show calendar, registrations and search.

-- A company or club that puts on shows. Its members manage its scenes and venues.
create table organizer (
    organizer_id uuid primary key default gen_random_uuid(),
    name         text not null check (char_length(name) between 1 and 200),
    description  text not null default '' check (char_length(description) <= 5000),
    website      text not null default '' check (char_length(website) <= 500),
    created_at   timestamptz not null default now()
);

create table organizer_member (
    organizer_id uuid not null references organizer on delete cascade,
    user_id      uuid not null references app_user on delete cascade,
    role         text not null check (role in ('owner', 'member')),
    created_at   timestamptz not null default now(),
    primary key (organizer_id, user_id)
);
create index organizer_member_user_idx on organizer_member (user_id);

-- What a venue offers people with particular needs. New ones are rows, not columns.
create table accessibility_feature (
    feature_id  smallint primary key,
    code        text not null unique check (code ~ '^[a-z_]+$'),
    description text not null
);
insert into accessibility_feature (feature_id, code, description) values
    (1, 'step_free',          'step-free access from the street to the seats'),
    (2, 'wheelchair_spaces',  'wheelchair spaces with companion seats'),
    (3, 'hearing_loop',       'an induction loop for hearing aids'),
    (4, 'quiet_zone',         'a quiet room or zone away from the crowd'),
    (5, 'accessible_toilets', 'accessible toilets'),
    (6, 'sign_language',      'sign-language interpretation at shows'),
    (7, 'audio_description',  'audio description of what is on the screen'),
    (8, 'assistance_dogs',    'assistance dogs welcome, with water and a relief area'),
    (9, 'large_print',        'large-print and easy-read information');

create table venue (
    venue_id     uuid primary key default gen_random_uuid(),
    organizer_id uuid not null references organizer on delete restrict,
    name         text not null check (char_length(name) between 1 and 200),
    address      text not null default '' check (char_length(address) <= 500),
    lat          double precision not null check (lat between -90 and 90),
    lon          double precision not null check (lon between -180 and 180),
    capacity     integer not null check (capacity > 0),
    -- free-form facts the pages show (transport, parking, doors open, ...)
    details      jsonb not null default '{}' check (jsonb_typeof(details) = 'object'),
    search       tsvector generated always as (
        setweight(to_tsvector('simple', name), 'A') || setweight(to_tsvector('simple', address), 'B')
    ) stored,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);
create index venue_organizer_idx on venue (organizer_id);
-- distance searches take a latitude band first (then the exact great-circle distance); no
-- extension needed, and nothing that `pg_dump`/`pg_restore` cannot carry
create index venue_lat_idx on venue (lat, lon);

create table venue_feature (
    venue_id   uuid not null references venue on delete cascade,
    feature_id smallint not null references accessibility_feature,
    primary key (venue_id, feature_id)
);
create index venue_feature_feature_idx on venue_feature (feature_id, venue_id);

-- A venue's seat map: scenes at the venue without a seat map of their own use it.
create table venue_seat (
    venue_id  uuid not null references venue on delete cascade,
    section   text not null check (section <> ''),
    row_name  text not null check (row_name <> ''),
    seat      text not null check (seat <> ''),
    x         double precision not null,
    y         double precision not null,
    primary key (venue_id, section, row_name, seat)
);

-- A scene on the calendar: who puts it on, where, when, and how many may register.
alter table scene
    add column organizer_id uuid references organizer on delete set null,
    add column venue_id     uuid references venue on delete set null,
    add column starts_at    timestamptz,
    add column ends_at      timestamptz,
    add column capacity     integer check (capacity > 0),
    add column registered   integer not null default 0 check (registered >= 0),
    -- the database, not the code, keeps registrations within capacity
    add constraint scene_capacity_kept check (capacity is null or registered <= capacity),
    add constraint scene_times check (ends_at is null or (starts_at is not null and ends_at > starts_at)),
    add constraint scene_venue_times check (venue_id is null or starts_at is not null),
    -- scene text and its venue's, kept by the trigger below: one GIN index serves the search
    add column search tsvector not null default ''::tsvector;
create index scene_search_idx on scene using gin (search);
create index scene_starts_idx on scene (starts_at) where starts_at is not null;
create index scene_venue_starts_idx on scene (venue_id, starts_at);
create index scene_organizer_starts_idx on scene (organizer_id, starts_at);

create function scene_search_doc(s scene) returns tsvector language sql stable as $$
    select setweight(to_tsvector('simple', s.name), 'A')
        || setweight(to_tsvector('simple', s.venue), 'B')
        || setweight(to_tsvector('simple', s.description), 'C')
        || coalesce((select v.search from venue v where v.venue_id = s.venue_id), ''::tsvector)
$$;

create function scene_search_refresh() returns trigger language plpgsql as $$
begin
    new.search := scene_search_doc(new);
    return new;
end
$$;
create trigger scene_search_refresh before insert or update of name, venue, description, venue_id
    on scene for each row execute function scene_search_refresh();

create function venue_search_changed() returns trigger language plpgsql as $$
begin
    update scene s set search = scene_search_doc(s) where s.venue_id = new.venue_id;
    return null;
end
$$;
create trigger venue_search_changed after update of name, address on venue
    for each row execute function venue_search_changed();

update scene s set search = scene_search_doc(s);

create table registration (
    scene_id   uuid not null references scene on delete cascade,
    user_id    uuid not null references app_user on delete cascade,
    created_at timestamptz not null default now(),
    primary key (scene_id, user_id)
);
create index registration_user_idx on registration (user_id);

-- One number that changes whenever anything a search can return changes; every node reads it
-- before answering from its cache, so no node serves a result older than a change.
create table catalog_version (
    catalog_version_id smallint primary key check (catalog_version_id = 1),
    version            bigint not null
);
insert into catalog_version values (1, 0);

create function catalog_changed() returns trigger language plpgsql as $$
begin
    update catalog_version set version = version + 1 where catalog_version_id = 1;
    return null;
end
$$;
-- (not on `registered`: a registration changes no search result)
create trigger scene_catalog_changed after insert or delete on scene
    for each statement execute function catalog_changed();
create trigger scene_catalog_updated after update of name, description, venue, status,
    organizer_id, venue_id, starts_at, ends_at, capacity on scene
    for each statement execute function catalog_changed();
create trigger venue_catalog_changed after insert or update or delete on venue
    for each statement execute function catalog_changed();
create trigger venue_feature_catalog_changed after insert or update or delete on venue_feature
    for each statement execute function catalog_changed();
create trigger organizer_catalog_changed after insert or update or delete on organizer
    for each statement execute function catalog_changed();

insert into event_type (decider, event, description) values
    ('scene', 'scene_scheduled', 'the scene was put on the calendar (organizer, venue, times, capacity)');
