-- wrk script for figure 1 (bench/append.py runs it): each wrk thread holds one connection and
-- appends to a conversation of its own, cycling through prepared 400-character messages.
--
--   wrk -t N -c N -d S -s bench/wrk_append.lua URL -- KEY CONVERSATIONS_FILE BODIES_FILE [MODE [PREFIX]]
--
-- CONVERSATIONS_FILE: one conversation id per line (thread i takes line i); BODIES_FILE: one JSON
-- request body per line. Thread i starts at body i, as the httpx clients do. MODE: `append` (the
-- default); `keyed`, each append with an Idempotency-Key of its own (PREFIX, the thread, a count);
-- `healthz`, GET /healthz instead (the HTTP floor: what a request costs with no work behind it).
-- done() prints one line of JSON for the benchmark to read: responses by status (201, or 200 for
-- /healthz, counts as `created`), errors and latency quantiles (µs).

local counter = 0
local threads = {}

function setup(thread)
  thread:set("index", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

local function lines(path)
  local out = {}
  for line in io.lines(path) do
    if line ~= "" then table.insert(out, line) end
  end
  return out
end

function init(args)
  local key, conversations, bodies = args[1], lines(args[2]), lines(args[3])
  mode = args[4] or "append"
  key_prefix = (args[5] or "wrk") .. "-" .. index .. "-"
  path = "/v1/conversations/" .. conversations[(index % #conversations) + 1] .. "/messages"
  headers = { ["Authorization"] = "Bearer " .. key, ["Content-Type"] = "application/json" }
  ok_status = 201
  requests = {}
  if mode == "healthz" then
    ok_status = 200
    table.insert(requests, wrk.format("GET", "/healthz"))
  else
    for i = 0, #bodies - 1 do
      local body = bodies[((index + i) % #bodies) + 1]
      table.insert(requests, mode == "keyed" and body or wrk.format("POST", path, headers, body))
    end
  end
  next_request = 0
  sent = 0
  created = 0
  other = 0
end

function request()
  next_request = next_request % #requests + 1
  if mode == "keyed" then
    sent = sent + 1
    headers["Idempotency-Key"] = key_prefix .. sent
    return wrk.format("POST", path, headers, requests[next_request])
  end
  return requests[next_request]
end

function response(status, headers, body)
  if status == ok_status then
    created = created + 1
  else
    other = other + 1
  end
end

function done(summary, latency, requests)
  local ok, bad = 0, 0
  for _, thread in ipairs(threads) do
    ok = ok + thread:get("created")
    bad = bad + thread:get("other")
  end
  -- wrk keeps latencies in a histogram a script reads only through percentiles: one quantile per
  -- ten requests (evenly spaced) is enough to pool rounds and read p50 and p99 from them.
  local m = math.max(1, math.min(10000, math.ceil(summary.requests / 10)))
  local quantiles = {}
  for k = 0, m - 1 do
    quantiles[k + 1] = tostring(latency:percentile((k + 0.5) * 100 / m))
  end
  local errors = summary.errors
  io.write(string.format(
    'convtree-bench: {"created": %d, "other_status": %d, "requests": %d, "duration_us": %d, ' ..
    '"socket_errors": %d, "quantiles_us": [%s]}\n',
    ok, bad, summary.requests, summary.duration,
    errors.connect + errors.read + errors.write + errors.timeout, table.concat(quantiles, ",")))
end
