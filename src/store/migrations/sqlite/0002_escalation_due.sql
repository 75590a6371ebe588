-- The pending escalations by due time: what the worker's claim, `next_due` and `backlog` read,
-- cheap however many settled escalations the table keeps.
create index escalations_pending_due on escalations (scheduled_at) where status = 'PENDING';
-- The pending escalations by id: what a rebuild of the Redis index pages through.
create index escalations_pending_id on escalations (id) where status = 'PENDING';
