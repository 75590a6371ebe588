-- Services and escalation policies as data, and the integration keys alerts arrive with.

-- A named policy: its levels (as an incident's snapshot holds them) and how many times to walk
-- them again after the last.
create table escalation_policies (
    id text primary key,
    name text not null unique,
    repeat integer not null default 0,
    levels text not null,
    created_at integer not null,
    updated_at integer not null
);

-- What alerts are about. Without a policy of its own, a service uses the configured one.
create table services (
    id text primary key,
    name text not null unique,
    escalation_policy_id text references escalation_policies (id),
    auto_escalate integer not null default 1 check (auto_escalate in (0, 1)),
    created_at integer not null,
    updated_at integer not null
);

-- A service's integration keys: the secret is shown once and kept only as its SHA-256.
create table integration_keys (
    id text primary key,
    service_id text not null references services (id),
    name text not null,
    key_hash text not null unique,
    created_at integer not null,
    revoked_at integer
);
create index integration_keys_service on integration_keys (service_id, id);

alter table incidents add column service_id text references services (id);
create index incidents_service_id on incidents (service_id, id);
-- dedup is within one service: the scope is the service's id, or '' for incidents without one
alter table incidents add column dedup_scope text not null default '';
drop index incidents_live_dedup_key;
create unique index incidents_live_dedup_key on incidents (dedup_scope, dedup_key)
    where status in ('OPEN', 'ACKNOWLEDGED', 'ESCALATING');

create trigger escalation_policies_keep before delete on escalation_policies
    begin select raise(abort, 'klaxon never deletes escalation policies'); end;
create trigger services_keep before delete on services
    begin select raise(abort, 'klaxon never deletes services'); end;
create trigger integration_keys_keep before delete on integration_keys
    begin select raise(abort, 'klaxon never deletes integration keys'); end;

-- A heartbeat monitor: pinged at `POST /heartbeats/{key}`; a ping late by more than `interval`
-- opens an incident on its service, and the next ping resolves it. Never pinged, never due.
create table heartbeats (
    id text primary key,
    service_id text not null references services (id),
    name text not null,
    interval_ms integer not null,
    key_hash text not null unique,
    created_at integer not null,
    last_ping_at integer,
    -- the last ping + interval: when it is missed
    due_at integer,
    -- the incident its miss opened, until a ping resolves it
    incident_id text references incidents (id)
);
create index heartbeats_due on heartbeats (due_at) where incident_id is null;
create trigger heartbeats_keep before delete on heartbeats
    begin select raise(abort, 'klaxon never deletes heartbeats'); end;
