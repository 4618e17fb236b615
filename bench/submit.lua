-- wrk script: durable submits. Every request is POST /v1/jobs with a small
-- payload; the token comes from the DROVER_TOKEN environment variable.
wrk.method = "POST"
wrk.path = "/v1/jobs"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("DROVER_TOKEN")
-- The body is built per request (a counter in the payload), exactly as
-- submit-keys.lua builds its own, so the two differ only by the keys and the
-- load generator costs the same in both.
local counter = 0

function request()
   counter = counter + 1
   local body = string.format(
      '{"queue":"bench","payload":{"customer":42,"plan":"vm.small","region":"fra1","n":%d}}',
      counter)
   return wrk.format(nil, nil, nil, body)
end

local non202 = 0

function response(status, headers, body)
   if status ~= 202 then
      non202 = non202 + 1
   end
end

function done(summary, latency, requests)
   io.write(string.format("RESULT requests=%d duration_us=%d rps=%.0f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f errors=%d\n",
      summary.requests, summary.duration, summary.requests / (summary.duration / 1e6),
      latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
      summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
