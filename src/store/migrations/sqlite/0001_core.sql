-- Klaxon core schema (SQLite). Timestamps are integer milliseconds since the Unix epoch (UTC);
-- ids are hyphenated UUIDv7 text, which sorts by creation time.

create table incidents (
    id text primary key,
    title text not null,
    severity text not null check (severity in ('critical', 'error', 'warning', 'info')),
    status text not null check (status in ('OPEN', 'ACKNOWLEDGED', 'ESCALATING', 'RESOLVED', 'CANCELLED')),
    dedup_key text,
    event_count integer not null default 0,
    escalation_level integer not null default 0,
    -- the policy snapshot taken when the incident started escalating (JSON)
    escalation_policy text,
    resolution_note text,
    created_at integer not null,
    updated_at integer not null,
    acknowledged_at integer,
    resolved_at integer,
    cancelled_at integer
);
-- at most one live incident per dedup_key: what makes concurrent dedup safe
create unique index incidents_live_dedup_key on incidents (dedup_key)
    where status in ('OPEN', 'ACKNOWLEDGED', 'ESCALATING');
create index incidents_status_id on incidents (status, id);

create table events (
    id text primary key,
    incident_id text not null references incidents (id),
    source text not null,
    summary text not null,
    severity text not null,
    dedup_key text,
    payload text not null,
    received_at integer not null
);
create index events_incident on events (incident_id);

create table escalations (
    id text primary key,
    incident_id text not null references incidents (id),
    escalation_level integer not null,
    status text not null check (status in ('PENDING', 'EXECUTED', 'CANCELLED')),
    scheduled_at integer not null,
    executed_at integer,
    cancelled_at integer,
    created_at integer not null
);
-- each level of an incident's policy is scheduled once
create unique index escalations_incident_level on escalations (incident_id, escalation_level);
create index escalations_status_scheduled_at on escalations (status, scheduled_at);

create table timeline (
    seq integer primary key autoincrement,
    id text not null unique,
    incident_id text not null references incidents (id),
    at integer not null,
    kind text not null,
    actor text not null,
    detail text not null
);
create index timeline_incident on timeline (incident_id, seq);

create table tokens (
    id text primary key,
    name text not null,
    role text not null check (role in ('admin', 'responder', 'viewer')),
    secret_hash text not null unique,
    created_at integer not null,
    revoked_at integer
);

-- Nothing is deleted (SPEC §6.3): the database refuses it, whoever asks.
create trigger incidents_keep before delete on incidents
    begin select raise(abort, 'klaxon never deletes incidents'); end;
create trigger events_keep before delete on events
    begin select raise(abort, 'klaxon never deletes events'); end;
create trigger escalations_keep before delete on escalations
    begin select raise(abort, 'klaxon never deletes escalations'); end;
create trigger timeline_keep before delete on timeline
    begin select raise(abort, 'klaxon never deletes timeline entries'); end;
create trigger tokens_keep before delete on tokens
    begin select raise(abort, 'klaxon never deletes tokens'); end;
