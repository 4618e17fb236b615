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

dofile("bench/report.lua")
