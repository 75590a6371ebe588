-- People, the outbox of notifications, and the links in messages that have been used.

create table users (
    id uuid primary key,
    handle text not null unique,
    name text not null,
    email text not null,
    phone text,
    role text not null check (role in ('admin', 'responder', 'viewer')),
    time_zone text not null,
    active boolean not null default true,
    created_at timestamptz not null,
    -- bumped by every change: a change applies only to the version it was made from
    version bigint not null default 1,
    updated_at timestamptz not null
);

-- a token may act for a user: its actions are attributed to the user's handle
alter table tokens add column user_id uuid references users (id);

-- One delivery of one escalation level to one recipient (a user's handle, or a webhook's name)
-- over one channel. `due_at` is when the dispatcher may next take it: the next attempt of a
-- PENDING row, or, while one dispatcher holds it, when its lease runs out.
create table notifications (
    id uuid primary key,
    escalation_id uuid not null references escalations (id),
    incident_id uuid not null references incidents (id),
    escalation_level integer not null,
    channel text not null,
    recipient text not null,
    user_id uuid references users (id),
    status text not null check (status in ('PENDING', 'SENT', 'FAILED', 'CANCELLED')),
    attempts integer not null default 0,
    last_error text,
    provider_id text,
    -- held back by the recipient's rate limit: goes out in the next digest
    held boolean not null default false,
    -- the idempotency key of the message that carried it (its own id, or a digest's)
    message_key text,
    due_at timestamptz not null,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    sent_at timestamptz,
    read_at timestamptz
);
-- exactly one notification per (escalation, recipient, channel), whatever runs twice
create unique index notifications_once on notifications (escalation_id, recipient, channel);
create index notifications_pending_due on notifications (due_at) where status = 'PENDING';
create index notifications_incident on notifications (incident_id, id);
create index notifications_user on notifications (user_id, channel, id);
create index notifications_sent on notifications (channel, recipient, sent_at) where sent_at is not null;

-- the key that signs the acknowledge and resolve links in messages: made once, here, and shared
-- by every instance, so a link works whichever instance serves it (gen_random_uuid draws from a
-- cryptographically strong source: two give 244 random bits)
alter table installation add column link_key text;
update installation set link_key = replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', '');

-- One row per recipient and channel with a rate limit: what a dispatcher locks while it decides
-- what fits the recipient's window and reserves it, so that instances take turns and together
-- keep to the limit.
create table rate_windows (
    channel text not null,
    recipient text not null,
    touched_at timestamptz not null,
    primary key (channel, recipient)
);

-- each acknowledge or resolve link acts once
create table used_links (
    id text primary key,
    incident_id uuid not null references incidents (id),
    used_at timestamptz not null
);

create trigger users_keep before delete on users for each row execute function klaxon_refuse_delete();
create trigger notifications_keep before delete on notifications for each row execute function klaxon_refuse_delete();
create trigger used_links_keep before delete on used_links for each row execute function klaxon_refuse_delete();
create trigger rate_windows_keep before delete on rate_windows for each row execute function klaxon_refuse_delete();
create trigger users_keep_all before truncate on users for each statement execute function klaxon_refuse_delete();
create trigger notifications_keep_all before truncate on notifications for each statement execute function klaxon_refuse_delete();
create trigger used_links_keep_all before truncate on used_links for each statement execute function klaxon_refuse_delete();
