-- POST /message to klaxon with a unique text and no dedup_key, so every request opens a new
-- incident: one durable event per request.
-- Arguments (after `--`): the bearer token, a run nonce that keeps texts unique across runs.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk_report.lua")

function init_target(args)
  wrk.method = "POST"
  wrk.path = "/message"
  wrk.headers["Authorization"] = "Bearer " .. args[1]
  wrk.headers["Content-Type"] = "application/json"
  nonce = args[2]
end

function build_body(thread_id, n)
  return string.format('{"text":"bench %s: disk full on host-%d-%d"}', nonce, thread_id, n)
end
