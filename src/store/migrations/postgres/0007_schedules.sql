-- On-call schedules: a named time zone, its rotations (layers) and its overrides. Nothing is
-- deleted: a rotation or an override that no longer applies is retired (`retired_at`).

create table schedules (
    id uuid primary key,
    name text not null unique,
    -- an IANA name, as the tz database spells it
    time_zone text not null,
    created_at timestamptz not null,
    updated_at timestamptz not null
);

-- Participants take turns in shifts of `shift_length` hours, days or weeks, handing off at the
-- wall-clock time of `start` (no offset: the schedule's zone). Replacing a rotation keeps its id.
create table rotations (
    id uuid primary key,
    schedule_id uuid not null references schedules (id),
    name text not null,
    kind text not null check (kind in ('hourly', 'daily', 'weekly')),
    shift_length bigint not null,
    start text not null,
    -- user ids in turn order; a user may appear more than once
    participants jsonb not null,
    priority integer not null default 0,
    -- [{"weekdays": [...], "start": "09:00", "end": "17:00"}]; empty: always
    restrictions jsonb not null default '[]',
    created_at timestamptz not null,
    updated_at timestamptz not null,
    retired_at timestamptz
);
create index rotations_live on rotations (schedule_id, created_at, id) where retired_at is null;

-- A user on call over an absolute range, in `replaces_user_id`'s place or beside whoever is.
create table overrides (
    id uuid primary key,
    schedule_id uuid not null references schedules (id),
    user_id uuid not null references users (id),
    replaces_user_id uuid references users (id),
    start_at timestamptz not null,
    end_at timestamptz not null check (end_at > start_at),
    created_at timestamptz not null,
    retired_at timestamptz
);
create index overrides_live on overrides (schedule_id, end_at) where retired_at is null;

create trigger schedules_keep before delete on schedules for each row execute function klaxon_refuse_delete();
create trigger rotations_keep before delete on rotations for each row execute function klaxon_refuse_delete();
create trigger overrides_keep before delete on overrides for each row execute function klaxon_refuse_delete();
create trigger schedules_keep_all before truncate on schedules for each statement execute function klaxon_refuse_delete();
create trigger rotations_keep_all before truncate on rotations for each statement execute function klaxon_refuse_delete();
create trigger overrides_keep_all before truncate on overrides for each statement execute function klaxon_refuse_delete();
