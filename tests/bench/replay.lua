-- wrk script for receiver_bench.py: replay pre-signed Stripe webhooks, each sent once, and count outcomes.
--
-- Usage: wrk ... -s replay.lua URL -- REQUESTS_FILE
-- REQUESTS_FILE holds two lines per webhook: the Stripe-Signature header value, then the JSON body
-- (json.dumps never writes a raw newline). Thread k of N keeps the webhooks whose index is k mod N, so
-- no two connections ever send the same event. When a thread has sent all of its webhooks it starts
-- again from its first one and counts the replays in `wrapped`: harmless for the baseline (it does not
-- de-duplicate), but for the real receiver they would be cheap duplicates, so the caller sizes the file
-- to avoid them and treats any as an invalid run.
--
-- done() prints one line starting with "BENCH_JSON " that receiver_bench.py parses.

local threads = {}
local thread_count = 0

function setup(thread)
   thread:set("thread_index", thread_count)
   thread_count = thread_count + 1
   table.insert(threads, thread)
end

-- Per-thread state (each wrk thread has its own Lua state; done() reads these through thread:get).
requests = {}
position = 0
sent = 0
wrapped = 0
ok = 0          -- 200 and not a duplicate
duplicate = 0   -- 200 but the receiver said it had the event already
non200 = 0
statuses = ""   -- "code:count,..." of the non-200 answers (thread:get can only carry scalars)
local status_counts = {}

function init(args)
   local path = args[1]
   local stride = tonumber(args[2])
   local file = assert(io.open(path, "rb"))
   local index = 0
   while true do
      local signature = file:read("*l")
      if signature == nil then break end
      local body = assert(file:read("*l"), "requests file ends after a signature line")
      if index % stride == thread_index then
         requests[#requests + 1] = wrk.format("POST", "/webhooks/stripe", {
            ["Content-Type"] = "application/json",
            ["Stripe-Signature"] = signature,
         }, body)
      end
      index = index + 1
   end
   file:close()
   assert(#requests > 0, "no requests for thread " .. thread_index)
end

function request()
   -- wrk calls this once more on thread 0 before the run to check the request; that webhook is skipped.
   position = position + 1
   if position > #requests then
      position = 1
      wrapped = wrapped + 1
   end
   sent = sent + 1
   return requests[position]
end

function response(status, headers, body)
   if status == 200 then
      if body and string.find(body, '"duplicate":true', 1, true) then
         duplicate = duplicate + 1
      else
         ok = ok + 1
      end
   else
      non200 = non200 + 1
      status_counts[status] = (status_counts[status] or 0) + 1
      local parts = {}
      for code, count in pairs(status_counts) do
         parts[#parts + 1] = code .. ":" .. count
      end
      statuses = table.concat(parts, ",")
   end
end

function done(summary, latency, _)
   local totals = { sent = 0, wrapped = 0, ok = 0, duplicate = 0, non200 = 0 }
   local status_list = {}
   for _, thread in ipairs(threads) do
      for name, _ in pairs(totals) do
         totals[name] = totals[name] + (thread:get(name) or 0)
      end
      local s = thread:get("statuses")
      if s and s ~= "" then status_list[#status_list + 1] = s end
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH_JSON {"duration_us":%d,"responses":%d,"bytes":%d,' ..
      '"sent":%d,"wrapped":%d,"ok":%d,"duplicate":%d,"non200":%d,"non200_statuses":"%s",' ..
      '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
      '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
      summary.duration, summary.requests, summary.bytes,
      totals.sent, totals.wrapped, totals.ok, totals.duplicate, totals.non200, table.concat(status_list, ","),
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max, latency.mean))
end
