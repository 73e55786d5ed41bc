-- wrk script of the checkgate bench: optional method and JSON body, a measurement window, JSON out.
--
--   wrk ... -s bench/wrk_report.lua URL -- <window_start> <window_end> [METHOD] [BODY] [unique]
--       [<ramp_ms> <connections> <threads>]
--
-- With "unique", every request puts a number of its own in place of __N__ in the URL and of "__N__"
-- (a JSON string) in the body, so that no two requests are identical.
--
-- With a ramp, the connections send their first requests spread evenly over ramp_ms, as JMeter's
-- ramp-up does: a closed loop whose clients all start at once runs in waves for many round trips,
-- and those waves, not the steady state, would make the tail of the latency histogram (which covers
-- the whole run).
--
-- window_start/window_end are epoch seconds: the responses completed in [start, end) give the rate,
-- so the ramp-up of a closed loop (every client starting at once) and the cut at the end do not bias
-- it. Latency percentiles come from wrk's own histogram over the whole run. One line goes to stdout:
--   BENCH_JSON {...}

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_no", #threads)
end

-- wrk asks for the request and delay functions after init, so init can choose dynamic ones.
local function unique_request()
   serial = serial + 1
   local n = tostring(serial)
   local path = path_template:gsub("__N__", n)
   local body = body_template and body_template:gsub('"__N__"', n)
   return wrk.format(nil, path, nil, body)
end

-- Connection k of this thread (in the order they first ask) is client k * threads + thread_no - 1 of
-- all, and starts at that share of the ramp; every later request goes at once.
local function ramp_delay()
   if started >= per_thread then
      return 0
   end
   local client = started * ramp_threads + thread_no - 1
   started = started + 1
   return math.floor(client * ramp_ms / ramp_clients)
end

function init(args)
   window_start = tonumber(args[1]) or 0
   window_end = tonumber(args[2]) or math.huge
   if args[3] and args[3] ~= "" then
      wrk.method = args[3]
   end
   if args[4] and args[4] ~= "" then
      wrk.body = args[4]
      wrk.headers["Content-Type"] = "application/json"
   end
   if args[5] == "unique" then
      -- Disjoint numbers per thread: 10^9 apart, well inside the range `add` accepts.
      serial = thread_no * 1000000000
      path_template = wrk.path
      body_template = wrk.body
      request = unique_request
   end
   ramp_ms = tonumber(args[6]) or 0
   if ramp_ms > 0 then
      ramp_clients = tonumber(args[7])
      ramp_threads = tonumber(args[8])
      per_thread = math.floor(ramp_clients / ramp_threads)
      started = 0
      delay = ramp_delay
   end
   in_window = 0
   bad_in_window = 0
   non_2xx = 0
end

function response(status, headers, body)
   -- os.time() is whole seconds, so the window is exactly (end - start) seconds long.
   local now = os.time()
   local bad = status < 200 or status > 299
   if bad then
      non_2xx = non_2xx + 1
   end
   if now >= window_start and now < window_end then
      in_window = in_window + 1
      if bad then
         bad_in_window = bad_in_window + 1
      end
   end
end

function done(summary, latency, requests)
   local inw, bad, non2xx = 0, 0, 0
   for _, thread in ipairs(threads) do
      inw = inw + thread:get("in_window")
      bad = bad + thread:get("bad_in_window")
      non2xx = non2xx + thread:get("non_2xx")
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"requests":%d,"duration_us":%d,"in_window":%d,"bad_in_window":%d,"non_2xx":%d,'
         .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
         .. '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"mean":%.1f,"max":%d}}\n',
      summary.requests, summary.duration, inw, bad, non2xx,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
