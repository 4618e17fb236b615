-- Shared by the wrk scripts: the RESULT line bench/run.sh reads, and the
-- count of answers that were not 202.
non202 = 0

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
