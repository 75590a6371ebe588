-- Shared by message.lua and alert.lua: numbers each thread, counts answers by status in every
-- thread, and at the end prints one line `BENCH_RESULT {json}` that bench/ingest.py parses.
-- A target script defines `build_body(thread_id, n)` and sets wrk.method, wrk.path, wrk.headers.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

function init(args)
  script_args = args
  sent = 0
  statuses = {}
  if init_target then init_target(args) end
end

function request()
  sent = sent + 1
  return wrk.format(nil, nil, nil, build_body(thread_id, sent))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,'
      .. '"max_us":%d,"socket_errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
      .. '"statuses":{%s}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.timeout, table.concat(parts, ",")))
end
