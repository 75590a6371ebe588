-- Reaching a human: contact methods, personal notification rules, and on each notification the
-- address it goes to, the provider that carried it, its receipt (DELIVERED) and its reply code.

-- One address of a user on one channel. A method is never deleted; `disabled_at` retires it.
create table contact_methods (
    id uuid primary key,
    user_id uuid not null references users (id),
    type text not null check (type in ('email', 'sms', 'voice', 'push', 'webhook')),
    address text not null,
    created_at timestamptz not null,
    disabled_at timestamptz,
    unique (user_id, type, address)
);

-- "Tell me through this method, this long after a level names me, then every so often."
create table notification_rules (
    id uuid primary key,
    user_id uuid not null references users (id),
    contact_method_id uuid not null references contact_methods (id),
    delay_ms bigint not null,
    repeat_every_ms bigint,
    max_repeats bigint,
    created_at timestamptz not null,
    disabled_at timestamptz
);
create index notification_rules_user on notification_rules (user_id);

-- every user's email, and phone (for text and for calls), become their first contact methods
insert into contact_methods (id, user_id, type, address, created_at)
    select gen_random_uuid(), id, 'email', email, created_at from users;
insert into contact_methods (id, user_id, type, address, created_at)
    select gen_random_uuid(), id, 'sms', phone, created_at from users where phone is not null;
insert into contact_methods (id, user_id, type, address, created_at)
    select gen_random_uuid(), id, 'voice', phone, created_at from users where phone is not null;

alter table notifications drop constraint notifications_status_check;
alter table notifications add constraint notifications_status_check
    check (status in ('PENDING', 'SENT', 'DELIVERED', 'FAILED', 'CANCELLED'));
-- where it goes (an email address, a phone number, an ntfy topic, a URL), through which method
alter table notifications add column address text;
alter table notifications add column contact_method_id uuid references contact_methods (id);
-- what makes it one of a kind within its escalation, recipient and channel: '' for a level's
-- own channel, the contact method's id, or a personal rule and its repeat (`rule:<id>:<n>`)
alter table notifications add column route text not null default '';
-- the provider that carried its last attempt, and which one (counted from 0) carries the next
alter table notifications add column provider text;
alter table notifications add column provider_index integer not null default 0;
-- the code replies name (SMS and voice): `ACK 4821`
alter table notifications add column reply_code text;

drop index notifications_once;
create unique index notifications_once on notifications (escalation_id, recipient, channel, route);
drop index notifications_sent;
create index notifications_sent on notifications (channel, (coalesce(address, recipient)), sent_at)
    where sent_at is not null;
create index notifications_provider_message on notifications (provider_id) where provider_id is not null;
create index notifications_reply on notifications (address, reply_code) where reply_code is not null;

create trigger contact_methods_keep before delete on contact_methods for each row execute function klaxon_refuse_delete();
create trigger notification_rules_keep before delete on notification_rules for each row execute function klaxon_refuse_delete();
create trigger contact_methods_keep_all before truncate on contact_methods for each statement execute function klaxon_refuse_delete();
create trigger notification_rules_keep_all before truncate on notification_rules for each statement execute function klaxon_refuse_delete();
