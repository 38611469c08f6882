-- wrk script of benchmarks/peers.py: POST one fixed body, print one JSON line at the end.
-- Environment: BODY_FILE (the request body), CONTENT_TYPE (default application/json),
-- AUTHORIZATION (optional, sent as the Authorization header).
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = os.getenv("CONTENT_TYPE") or "application/json"
local auth = os.getenv("AUTHORIZATION")
if auth and auth ~= "" then
  wrk.headers["Authorization"] = auth
end

-- no response() callback: it would run Lua per response; summary.errors.status counts non-2xx
function done(summary, latency, requests)
  local e = summary.errors
  local seconds = summary.duration / 1e6
  io.write(string.format(
    'RESULT_JSON {"requests": %d, "seconds": %.3f, "rps": %.1f, "p50_us": %d, "p90_us": %d, '
    .. '"p99_us": %d, "mean_us": %.1f, "max_us": %d, "err_connect": %d, "err_read": %d, '
    .. '"err_write": %d, "err_status": %d, "err_timeout": %d}\n',
    summary.requests, seconds, summary.requests / seconds,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
