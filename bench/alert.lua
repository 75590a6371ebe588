-- POST /api/v2/alerts to Alertmanager: a one-alert array whose labels are unique per request,
-- so every request adds a new alert rather than refreshing one.
-- Argument (after `--`): a run nonce that keeps labels unique across runs.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "wrk_report.lua")

function init_target(args)
  wrk.method = "POST"
  wrk.path = "/api/v2/alerts"
  wrk.headers["Content-Type"] = "application/json"
  nonce = args[1]
end

function build_body(thread_id, n)
  return string.format(
    '[{"labels":{"alertname":"BenchDiskFull","run":"%s","instance":"host-%d-%d"},'
      .. '"annotations":{"summary":"disk full"}}]',
    nonce, thread_id, n)
end
