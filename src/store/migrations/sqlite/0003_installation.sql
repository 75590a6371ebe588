-- This deployment's identity: one row, written here, once (on a new database, or on an older one
-- when this migration first runs); nothing in Klaxon changes it. The Redis index names its keys
-- after it, so deployments that share a Redis never read each other's entries (docs/engine.md,
-- "Redis").
create table installation (
    -- at most one row
    singleton integer primary key default 1 check (singleton = 1),
    id text not null
);
-- A random (version 4) UUID, hyphenated: SQLite has no function for it.
insert into installation (id) values (
    lower(hex(randomblob(4))) || '-' || lower(hex(randomblob(2))) || '-4'
    || substr(lower(hex(randomblob(2))), 2) || '-'
    || substr('89ab', 1 + (random() & 3), 1) || substr(lower(hex(randomblob(2))), 2) || '-'
    || lower(hex(randomblob(6)))
);
create trigger installation_keep before delete on installation
    begin select raise(abort, 'klaxon never deletes the installation'); end;
