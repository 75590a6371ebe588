-- POST /v2/enqueue to klaxon (PagerDuty's Events API v2): a trigger with a unique dedup_key, so
-- every request opens a new incident on the service: one durable event per request.
-- Arguments (after `--`): the integration key, a run nonce that keeps keys unique across runs.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk_report.lua")

function init_target(args)
  wrk.method = "POST"
  wrk.path = "/v2/enqueue"
  wrk.headers["Content-Type"] = "application/json"
  routing_key = args[1]
  nonce = args[2]
end

function build_body(thread_id, n)
  return string.format(
    '{"routing_key":"%s","event_action":"trigger","dedup_key":"bench-%s-%d-%d",'
      .. '"payload":{"summary":"disk full on host-%d-%d","source":"host-%d","severity":"critical"}}',
    routing_key, nonce, thread_id, n, thread_id, n, thread_id)
end
