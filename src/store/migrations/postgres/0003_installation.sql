-- This deployment's identity: one row, written here, once (on a new database, or on an older one
-- when this migration first runs); nothing in Klaxon changes it. The Redis index names its keys
-- after it, so deployments that share a Redis never read each other's entries (docs/engine.md,
-- "Redis").
create table installation (
    -- at most one row
    singleton boolean primary key default true check (singleton),
    id uuid not null
);
insert into installation (id) values (gen_random_uuid());
create trigger installation_keep before delete on installation for each row execute function klaxon_refuse_delete();
create trigger installation_keep_all before truncate on installation for each statement execute function klaxon_refuse_delete();
