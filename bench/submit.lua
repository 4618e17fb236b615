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

dofile("bench/report.lua")
