-- Klaxon core schema (PostgreSQL).

create table incidents (
    id uuid primary key,
    title text not null,
    severity text not null check (severity in ('critical', 'error', 'warning', 'info')),
    status text not null check (status in ('OPEN', 'ACKNOWLEDGED', 'ESCALATING', 'RESOLVED', 'CANCELLED')),
    dedup_key text,
    event_count bigint not null default 0,
    escalation_level integer not null default 0,
    -- the policy snapshot taken when the incident started escalating
    escalation_policy jsonb,
    resolution_note text,
    created_at timestamptz not null,
    updated_at timestamptz not null,
    acknowledged_at timestamptz,
    resolved_at timestamptz,
    cancelled_at timestamptz
);
-- at most one live incident per dedup_key: what makes concurrent dedup safe
create unique index incidents_live_dedup_key on incidents (dedup_key)
    where status in ('OPEN', 'ACKNOWLEDGED', 'ESCALATING');
create index incidents_status_id on incidents (status, id);

create table events (
    id uuid primary key,
    incident_id uuid not null references incidents (id),
    source text not null,
    summary text not null,
    severity text not null,
    dedup_key text,
    payload jsonb not null,
    received_at timestamptz not null
);
create index events_incident on events (incident_id);

create table escalations (
    id uuid primary key,
    incident_id uuid not null references incidents (id),
    escalation_level integer not null,
    status text not null check (status in ('PENDING', 'EXECUTED', 'CANCELLED')),
    scheduled_at timestamptz not null,
    executed_at timestamptz,
    cancelled_at timestamptz,
    created_at timestamptz not null
);
-- each level of an incident's policy is scheduled once
create unique index escalations_incident_level on escalations (incident_id, escalation_level);
create index escalations_status_scheduled_at on escalations (status, scheduled_at);

create table timeline (
    seq bigint generated always as identity primary key,
    id uuid not null unique,
    incident_id uuid not null references incidents (id),
    at timestamptz not null,
    kind text not null,
    actor text not null,
    detail jsonb not null
);
create index timeline_incident on timeline (incident_id, seq);

create table tokens (
    id uuid primary key,
    name text not null,
    role text not null check (role in ('admin', 'responder', 'viewer')),
    secret_hash text not null unique,
    created_at timestamptz not null,
    revoked_at timestamptz
);

-- Nothing is deleted (SPEC §6.3): the database refuses it, row by row or by truncate, whoever asks.
create function klaxon_refuse_delete() returns trigger language plpgsql as $$
begin
    raise exception 'klaxon never deletes from %', tg_table_name;
end;
$$;
create trigger incidents_keep before delete on incidents for each row execute function klaxon_refuse_delete();
create trigger events_keep before delete on events for each row execute function klaxon_refuse_delete();
create trigger escalations_keep before delete on escalations for each row execute function klaxon_refuse_delete();
create trigger timeline_keep before delete on timeline for each row execute function klaxon_refuse_delete();
create trigger tokens_keep before delete on tokens for each row execute function klaxon_refuse_delete();
create trigger incidents_keep_all before truncate on incidents for each statement execute function klaxon_refuse_delete();
create trigger events_keep_all before truncate on events for each statement execute function klaxon_refuse_delete();
create trigger escalations_keep_all before truncate on escalations for each statement execute function klaxon_refuse_delete();
create trigger timeline_keep_all before truncate on timeline for each statement execute function klaxon_refuse_delete();
create trigger tokens_keep_all before truncate on tokens for each statement execute function klaxon_refuse_delete();
