-- wrk script: durable submits that carry a dedup key (unique per request, so
-- every submit creates a job but pays for the check) and a concurrency key
-- (one of 1,000, in a queue whose limit is high enough never to refuse), so
-- the admission checks run on every request. Compare with submit.lua.
local counter = 0
local thread_id = 0
local threads = 0

function setup(thread)
   thread:set("thread_id", threads)
   threads = threads + 1
end

wrk.method = "POST"
wrk.path = "/v1/jobs"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("DROVER_TOKEN")

function request()
   counter = counter + 1
   local body = string.format(
      '{"queue":"bench-keys","payload":{"customer":42,"plan":"vm.small","region":"fra1"},' ..
      '"dedup_key":"order-%d-%d","concurrency_key":"user:%d"}',
      thread_id, counter, counter % 1000)
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
