-- People, the outbox of notifications, and the links in messages that have been used.

create table users (
    id text primary key,
    handle text not null unique,
    name text not null,
    email text not null,
    phone text,
    role text not null check (role in ('admin', 'responder', 'viewer')),
    time_zone text not null,
    active integer not null default 1 check (active in (0, 1)),
    created_at integer not null,
    -- bumped by every change: a change applies only to the version it was made from
    version integer not null default 1,
    updated_at integer not null
);

-- a token may act for a user: its actions are attributed to the user's handle
alter table tokens add column user_id text references users (id);

-- One delivery of one escalation level to one recipient (a user's handle, or a webhook's name)
-- over one channel. `due_at` is when the dispatcher may next take it: the next attempt of a
-- PENDING row, or, while one dispatcher holds it, when its lease runs out.
create table notifications (
    id text primary key,
    escalation_id text not null references escalations (id),
    incident_id text not null references incidents (id),
    escalation_level integer not null,
    channel text not null,
    recipient text not null,
    user_id text references users (id),
    status text not null check (status in ('PENDING', 'SENT', 'FAILED', 'CANCELLED')),
    attempts integer not null default 0,
    last_error text,
    provider_id text,
    -- held back by the recipient's rate limit: goes out in the next digest
    held integer not null default 0 check (held in (0, 1)),
    -- the idempotency key of the message that carried it (its own id, or a digest's)
    message_key text,
    due_at integer not null,
    created_at integer not null,
    updated_at integer not null,
    sent_at integer,
    read_at integer
);
-- exactly one notification per (escalation, recipient, channel), whatever runs twice
create unique index notifications_once on notifications (escalation_id, recipient, channel);
create index notifications_pending_due on notifications (due_at) where status = 'PENDING';
create index notifications_incident on notifications (incident_id, id);
create index notifications_user on notifications (user_id, channel, id);
create index notifications_sent on notifications (channel, recipient, sent_at) where sent_at is not null;

-- the key that signs the acknowledge and resolve links in messages: made once, here, and shared
-- by every instance, so a link works whichever instance serves it
alter table installation add column link_key text;
update installation set link_key = lower(hex(randomblob(32)));

-- One row per recipient and channel with a rate limit: what a dispatcher locks while it decides
-- what fits the recipient's window and reserves it, so that instances take turns and together
-- keep to the limit.
create table rate_windows (
    channel text not null,
    recipient text not null,
    touched_at integer not null,
    primary key (channel, recipient)
);

-- each acknowledge or resolve link acts once
create table used_links (
    id text primary key,
    incident_id text not null references incidents (id),
    used_at integer not null
);

create trigger users_keep before delete on users
    begin select raise(abort, 'klaxon never deletes users'); end;
create trigger notifications_keep before delete on notifications
    begin select raise(abort, 'klaxon never deletes notifications'); end;
create trigger rate_windows_keep before delete on rate_windows
    begin select raise(abort, 'klaxon never deletes rate windows'); end;
create trigger used_links_keep before delete on used_links
    begin select raise(abort, 'klaxon never deletes used links'); end;
