-- The deployment's signing secret (QR tokens), shared by every node: 32 random bytes made once.
create table server_secret (
    server_secret_id smallint primary key check (server_secret_id = 1),
    secret           bytea not null check (octet_length(secret) = 32),
    created_at       timestamptz not null default now()
);
insert into server_secret (server_secret_id, secret)
values (1, decode(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'hex'));
