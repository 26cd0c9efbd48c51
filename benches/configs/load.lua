-- wrk script for benches/load.sh: POST /api/order with a realistic body,
-- the same for every target. The body and apiKey come from the environment
-- (load.sh extracts them from src/sim/mod.rs, so they stay in one place).
-- done() prints one parseable line; latencies are in microseconds.

local body = os.getenv("BENCH_BODY")
local key = os.getenv("BENCH_KEY")
if body == nil or body == "" or key == nil or key == "" then
  io.stderr:write("load.lua: BENCH_BODY and BENCH_KEY must be set\n")
  os.exit(2)
end

wrk.method = "POST"
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key

-- No response() callback on purpose: defining one makes wrk hand every
-- response to Lua, which would cost the load generator more than some
-- targets. wrk counts statuses >= 400 itself (summary.errors.status).
function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  io.write(string.format(
    "RESULT rps=%.1f p50_us=%d p99_us=%d p999_us=%d max_us=%d requests=%d "
      .. "http_errors=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests / secs,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    latency.max, summary.requests,
    e.status, e.connect, e.read, e.write, e.timeout))
end
