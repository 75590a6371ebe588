-- On-call schedules: a named time zone, its rotations (layers) and its overrides. Nothing is
-- deleted: a rotation or an override that no longer applies is retired (`retired_at`).

create table schedules (
    id text primary key,
    name text not null unique,
    -- an IANA name, as the tz database spells it
    time_zone text not null,
    created_at integer not null,
    updated_at integer not null
);

-- Participants take turns in shifts of `shift_length` hours, days or weeks, handing off at the
-- wall-clock time of `start` (no offset: the schedule's zone). Replacing a rotation keeps its id.
create table rotations (
    id text primary key,
    schedule_id text not null references schedules (id),
    name text not null,
    kind text not null check (kind in ('hourly', 'daily', 'weekly')),
    shift_length integer not null,
    start text not null,
    -- user ids in turn order (JSON array); a user may appear more than once
    participants text not null,
    priority integer not null default 0,
    -- [{"weekdays": [...], "start": "09:00", "end": "17:00"}] (JSON); empty: always
    restrictions text not null default '[]',
    created_at integer not null,
    updated_at integer not null,
    retired_at integer
);
create index rotations_live on rotations (schedule_id, created_at, id) where retired_at is null;

-- A user on call over an absolute range, in `replaces_user_id`'s place or beside whoever is.
create table overrides (
    id text primary key,
    schedule_id text not null references schedules (id),
    user_id text not null references users (id),
    replaces_user_id text references users (id),
    start_at integer not null,
    end_at integer not null check (end_at > start_at),
    created_at integer not null,
    retired_at integer
);
create index overrides_live on overrides (schedule_id, end_at) where retired_at is null;

create trigger schedules_keep before delete on schedules
    begin select raise(abort, 'klaxon never deletes schedules'); end;
create trigger rotations_keep before delete on rotations
    begin select raise(abort, 'klaxon never deletes rotations'); end;
create trigger overrides_keep before delete on overrides
    begin select raise(abort, 'klaxon never deletes overrides'); end;
