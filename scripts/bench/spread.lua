-- wrk script for `make bench`: GET /predict/<pair> over the pairs of a file (one a line,
-- after `--`), in turn or, with `random` after it, at random (no pattern to ride on);
-- done() prints one JSON line for scripts/bench/wrk.py (wrk's own report rounds), with
-- the answers that waited for the model (X-Cache: MISS) and those that were not 2xx.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "r"), "cannot open the pairs file " .. tostring(args[1]))
  requests_ = {}
  for line in file:lines() do
    if line ~= "" then  -- formatted once: request() is then a table lookup
      table.insert(requests_, wrk.format("GET", "/predict/" .. line))
    end
  end
  file:close()
  assert(#requests_ > 0, "the pairs file names no pair")
  random_ = args[2] == "random"
  assert(args[2] == nil or random_, "the order is `random` or nothing, not " .. tostring(args[2]))
  -- Each thread its own start and sequence: threads neither walk in step nor draw alike.
  math.randomseed(os.time() + id * 7919)
  next_ = (id * 7919) % #requests_
  misses, non2xx = 0, 0
end

function request()
  if random_ then
    return requests_[math.random(#requests_)]
  end
  next_ = next_ % #requests_ + 1
  return requests_[next_]
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
  -- Header names arrive as the server spelled them (uvicorn sends them lower case).
  if (headers["X-Cache"] or headers["x-cache"]) == "MISS" then
    misses = misses + 1
  end
end

function done(summary, latency, requests)
  local total_misses, total_non2xx = 0, 0
  for _, thread in ipairs(threads) do
    total_misses = total_misses + thread:get("misses")
    total_non2xx = total_non2xx + thread:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "misses": %d, "non2xx": %d, '
      .. '"errors": %d, "latency_us": {"p50": %d, "p90": %d, "p99": %d}}\n',
    summary.requests, summary.duration, total_misses, total_non2xx,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)
  ))
end
