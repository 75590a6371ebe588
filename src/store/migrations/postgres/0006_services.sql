-- Services and escalation policies as data, and the integration keys alerts arrive with.

-- A named policy: its levels (as an incident's snapshot holds them) and how many times to walk
-- them again after the last.
create table escalation_policies (
    id uuid primary key,
    name text not null unique,
    repeat bigint not null default 0,
    levels jsonb not null,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

-- What alerts are about. Without a policy of its own, a service uses the configured one.
create table services (
    id uuid primary key,
    name text not null unique,
    escalation_policy_id uuid references escalation_policies (id),
    auto_escalate boolean not null default true,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

-- A service's integration keys: the secret is shown once and kept only as its SHA-256.
create table integration_keys (
    id uuid primary key,
    service_id uuid not null references services (id),
    name text not null,
    key_hash text not null unique,
    created_at timestamptz not null,
    revoked_at timestamptz
);
create index integration_keys_service on integration_keys (service_id, id);

alter table incidents add column service_id uuid references services (id);
create index incidents_service_id on incidents (service_id, id);
-- dedup is within one service: the scope is the service's id, or '' for incidents without one
alter table incidents add column dedup_scope text not null default '';
drop index incidents_live_dedup_key;
create unique index incidents_live_dedup_key on incidents (dedup_scope, dedup_key)
    where status in ('OPEN', 'ACKNOWLEDGED', 'ESCALATING');

create trigger escalation_policies_keep before delete on escalation_policies for each row execute function klaxon_refuse_delete();
create trigger services_keep before delete on services for each row execute function klaxon_refuse_delete();
create trigger integration_keys_keep before delete on integration_keys for each row execute function klaxon_refuse_delete();
create trigger escalation_policies_keep_all before truncate on escalation_policies for each statement execute function klaxon_refuse_delete();
create trigger services_keep_all before truncate on services for each statement execute function klaxon_refuse_delete();
create trigger integration_keys_keep_all before truncate on integration_keys for each statement execute function klaxon_refuse_delete();

-- A heartbeat monitor: pinged at `POST /heartbeats/{key}`; a ping late by more than `interval`
-- opens an incident on its service, and the next ping resolves it. Never pinged, never due.
create table heartbeats (
    id uuid primary key,
    service_id uuid not null references services (id),
    name text not null,
    interval_ms bigint not null,
    key_hash text not null unique,
    created_at timestamptz not null,
    last_ping_at timestamptz,
    -- the last ping + interval: when it is missed
    due_at timestamptz,
    -- the incident its miss opened, until a ping resolves it
    incident_id uuid references incidents (id)
);
create index heartbeats_due on heartbeats (due_at) where incident_id is null;
create trigger heartbeats_keep before delete on heartbeats for each row execute function klaxon_refuse_delete();
create trigger heartbeats_keep_all before truncate on heartbeats for each statement execute function klaxon_refuse_delete();
