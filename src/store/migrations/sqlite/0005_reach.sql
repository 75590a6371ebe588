-- Reaching a human: contact methods, personal notification rules, and on each notification the
-- address it goes to, the provider that carried it, its receipt (DELIVERED) and its reply code.

-- One address of a user on one channel. A method is never deleted; `disabled_at` retires it.
create table contact_methods (
    id text primary key,
    user_id text not null references users (id),
    type text not null check (type in ('email', 'sms', 'voice', 'push', 'webhook')),
    address text not null,
    created_at integer not null,
    disabled_at integer,
    unique (user_id, type, address)
);

-- "Tell me through this method, this long after a level names me, then every so often."
create table notification_rules (
    id text primary key,
    user_id text not null references users (id),
    contact_method_id text not null references contact_methods (id),
    delay_ms integer not null,
    repeat_every_ms integer,
    max_repeats integer,
    created_at integer not null,
    disabled_at integer
);
create index notification_rules_user on notification_rules (user_id);

-- every user's email, and phone (for text and for calls), become their first contact methods,
-- each with a random version-4 UUID made in SQL (evaluated per row)
insert into contact_methods (id, user_id, type, address, created_at)
    select lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
        || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2)
        || '-' || lower(hex(randomblob(6))),
        id, 'email', email, created_at from users;
insert into contact_methods (id, user_id, type, address, created_at)
    select lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
        || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2)
        || '-' || lower(hex(randomblob(6))),
        id, 'sms', phone, created_at from users where phone is not null;
insert into contact_methods (id, user_id, type, address, created_at)
    select lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
        || substr(lower(hex(randomblob(2))), 2) || '-'
        || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(lower(hex(randomblob(2))), 2)
        || '-' || lower(hex(randomblob(6))),
        id, 'voice', phone, created_at from users where phone is not null;

-- SQLite cannot change a check constraint in place: the table is rebuilt with its rows (a table
-- drop fires no delete trigger, and no table refers to this one)
create table notifications_0005 (
    id text primary key,
    escalation_id text not null references escalations (id),
    incident_id text not null references incidents (id),
    escalation_level integer not null,
    channel text not null,
    recipient text not null,
    user_id text references users (id),
    status text not null check (status in ('PENDING', 'SENT', 'DELIVERED', 'FAILED', 'CANCELLED')),
    attempts integer not null default 0,
    last_error text,
    provider_id text,
    held integer not null default 0 check (held in (0, 1)),
    message_key text,
    due_at integer not null,
    created_at integer not null,
    updated_at integer not null,
    sent_at integer,
    read_at integer,
    -- where it goes (an email address, a phone number, an ntfy topic, a URL), through which method
    address text,
    contact_method_id text references contact_methods (id),
    -- what makes it one of a kind within its escalation, recipient and channel: '' for a level's
    -- own channel, the contact method's id, or a personal rule and its repeat (`rule:<id>:<n>`)
    route text not null default '',
    -- the provider that carried its last attempt, and which one (counted from 0) carries the next
    provider text,
    provider_index integer not null default 0,
    -- the code replies name (SMS and voice): `ACK 4821`
    reply_code text
);
insert into notifications_0005 (id, escalation_id, incident_id, escalation_level, channel,
        recipient, user_id, status, attempts, last_error, provider_id, held, message_key, due_at,
        created_at, updated_at, sent_at, read_at)
    select id, escalation_id, incident_id, escalation_level, channel, recipient, user_id, status,
        attempts, last_error, provider_id, held, message_key, due_at, created_at, updated_at,
        sent_at, read_at
    from notifications;
drop table notifications;
alter table notifications_0005 rename to notifications;

create unique index notifications_once on notifications (escalation_id, recipient, channel, route);
create index notifications_pending_due on notifications (due_at) where status = 'PENDING';
create index notifications_incident on notifications (incident_id, id);
create index notifications_user on notifications (user_id, channel, id);
create index notifications_sent on notifications (channel, coalesce(address, recipient), sent_at)
    where sent_at is not null;
create index notifications_provider_message on notifications (provider_id) where provider_id is not null;
create index notifications_reply on notifications (address, reply_code) where reply_code is not null;

create trigger notifications_keep before delete on notifications
    begin select raise(abort, 'klaxon never deletes notifications'); end;
create trigger contact_methods_keep before delete on contact_methods
    begin select raise(abort, 'klaxon never deletes contact methods'); end;
create trigger notification_rules_keep before delete on notification_rules
    begin select raise(abort, 'klaxon never deletes notification rules'); end;
