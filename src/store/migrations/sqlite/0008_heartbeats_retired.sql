-- A heartbeat monitor can be retired (`DELETE /services/{id}/heartbeats/{heartbeat_id}`): it is
-- kept, but no longer listed, pinged or watched.
alter table heartbeats add column retired_at integer;
