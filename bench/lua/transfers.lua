-- wrk script: Tally transfers, one per request (POST /v1/transfers) or in batches
-- (POST /v1/transfers/batch), with a realistic mix:
--   ~85% single-phase transfers (half with a client id, half without),
--   ~15% pending transfers with a client id; each one that was created (201, or
--   "created" in a batch) is posted or voided by a later request of the same wrk
--   thread.
--
-- wrk gives Lua no handle on the connection a request goes out on: a script's
-- state is per thread, and one thread serves many connections. So "later request
-- of the same connection" becomes "later request of the same thread, sent only
-- after the pending transfer's 201 was read". With one connection per thread (the
-- 1-client point) the two are the same.
--
-- Every request carries a Request-Id that Tally echoes; response() uses it to find
-- what it answers, so every outcome is counted exactly: transfers created, amounts
-- posted and still pending, statuses, exceeds_credits refusals (a business outcome,
-- not an error). Requests still unanswered when wrk stops are reported with their
-- amounts, so the harness can bound what the server may have committed.
--
-- Environment:
--   BENCH_API_KEY    bearer key (required)
--   BENCH_OUT        file to write the JSON summary to (required)
--   BENCH_BATCH      0: POST /v1/transfers; N (1..1000): N items per /batch request
--   BENCH_ACCOUNTS   number of accounts a0000.. to move money between (default 1000)
--   BENCH_AMOUNT_MAX largest transfer amount, minor units (default 10000)
--   BENCH_RUN        a tag that makes this run's transfer ids unique (default: the time)
--   BENCH_HOT_PCT    % of new transfers with account a0000 on one side, the other side
--                    random (default 0; Blnk's hot-account test uses 50)

local api_key = os.getenv("BENCH_API_KEY")
local out_path = os.getenv("BENCH_OUT")
local batch_size = tonumber(os.getenv("BENCH_BATCH") or "0")
local accounts_n = tonumber(os.getenv("BENCH_ACCOUNTS") or "1000")
local amount_max = tonumber(os.getenv("BENCH_AMOUNT_MAX") or "10000")
local run_tag = os.getenv("BENCH_RUN") or tostring(os.time())
local hot_pct = tonumber(os.getenv("BENCH_HOT_PCT") or "0")

local PENDING_PCT = 15      -- of new transfers
local WITH_ID_PCT = 50      -- of single-phase transfers
local VOID_PCT = 25         -- of resolutions; the rest are posts
local RESOLVE_PCT = 50      -- chance to resolve a waiting pending transfer instead

-- Kinds of request (or batch item).
local SINGLE, PENDING, POST, VOID = 1, 2, 3, 4

local threads = {}

function setup(thread)
   thread:set("tid", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   assert(api_key and out_path, "BENCH_API_KEY and BENCH_OUT must be set")
   math.randomseed(os.time() + tid * 7919)
   seq = 0
   inflight = {}                 -- Request-Id -> what that request asked for
   queue, q_head, q_tail = {}, 1, 0  -- created pending transfers: {id, amount}
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. api_key,
   }
   -- Flat tables only: wrk's thread:get() crashes copying a nested table.
   stats = {
      requests = 0, responses = 0, unmatched = 0,
      created = 0, created_single = 0, created_pending = 0, created_post = 0,
      created_void = 0, exists = 0, exceeds_credits = 0, failed_items = 0,
      posted_amount = 0, pending_open_amount = 0,
      -- what the requests not yet answered may still do
      unanswered_requests = 0, unanswered_items = 0, unanswered_posted_amount_max = 0,
      unanswered_pending_amount_max = 0, unanswered_pending_release_max = 0,
   }
   error_samples = {}
end

local function new_transfer()
   -- returns kind, amount, id (or nil), JSON object
   seq = seq + 1
   local debit = math.random(0, accounts_n - 1)
   local credit = math.random(0, accounts_n - 2)
   if credit >= debit then credit = credit + 1 end
   if hot_pct > 0 and math.random(100) <= hot_pct then
      -- a0000 on a random side, so that it neither drains nor piles up
      local other = math.random(1, accounts_n - 1)
      if math.random(2) == 1 then debit, credit = 0, other else debit, credit = other, 0 end
   end
   local amount = math.random(1, amount_max)
   local body = string.format('"debit_account_id":"a%04d","credit_account_id":"a%04d","amount":%d',
                              debit, credit, amount)
   if math.random(100) <= PENDING_PCT then
      local id = string.format("p%s-%d-%d", run_tag, tid, seq)
      return PENDING, amount, id, '{"id":"' .. id .. '",' .. body .. ',"pending":true}'
   end
   if math.random(100) <= WITH_ID_PCT then
      local id = string.format("s%s-%d-%d", run_tag, tid, seq)
      return SINGLE, amount, id, '{"id":"' .. id .. '",' .. body .. '}'
   end
   return SINGLE, amount, nil, '{' .. body .. '}'
end

local function take_pending()
   -- the oldest created pending transfer, if we choose to resolve one now
   if q_head > q_tail or math.random(100) > RESOLVE_PCT then return nil end
   local p = queue[q_head]
   queue[q_head] = nil
   q_head = q_head + 1
   return p
end

local function resolve_kind()
   if math.random(100) <= VOID_PCT then return VOID end
   return POST
end

-- What an item may change if it commits: posted amount, new pending amount,
-- released pending amount.
local function effects(kind, amount)
   if kind == SINGLE then return amount, 0, 0 end
   if kind == PENDING then return 0, amount, 0 end
   if kind == POST then return amount, 0, amount end
   return 0, 0, amount
end

-- Add (sign 1) or remove (sign -1) a request from the unanswered figures.
local function count_unanswered(item, sign)
   stats.unanswered_requests = stats.unanswered_requests + sign
   stats.unanswered_items = stats.unanswered_items + sign * #item.kinds
   for i, kind in ipairs(item.kinds) do
      local posted, pending, released = effects(kind, item.amounts[i])
      stats.unanswered_posted_amount_max = stats.unanswered_posted_amount_max + sign * posted
      stats.unanswered_pending_amount_max = stats.unanswered_pending_amount_max + sign * pending
      stats.unanswered_pending_release_max =
         stats.unanswered_pending_release_max + sign * released
   end
end

local function send(path, body, item)
   seq = seq + 1
   local rid = string.format("b%d-%d", tid, seq)
   headers["Request-Id"] = rid
   inflight[rid] = item
   stats.requests = stats.requests + 1
   count_unanswered(item, 1)
   return wrk.format("POST", path, headers, body)
end

local function single_request()
   local p = take_pending()
   if p then
      local kind = resolve_kind()
      local action = kind == POST and "/post" or "/void"
      return send("/v1/transfers/" .. p[1] .. action, "{}",
                  {kinds = {kind}, amounts = {p[2]}, ids = {p[1]}})
   end
   local kind, amount, id, json = new_transfer()
   return send("/v1/transfers", json, {kinds = {kind}, amounts = {amount}, ids = {id or false}})
end

local function batch_request()
   local kinds, amounts, ids, parts = {}, {}, {}, {}
   for i = 1, batch_size do
      local p = take_pending()
      if p then
         local kind = resolve_kind()
         kinds[i], amounts[i], ids[i] = kind, p[2], p[1]
         parts[i] = string.format('{"pending_id":"%s","action":"%s"}', p[1],
                                  kind == POST and "post" or "void")
      else
         local kind, amount, id, json = new_transfer()
         kinds[i], amounts[i], ids[i], parts[i] = kind, amount, id or false, json
      end
   end
   local body = '{"atomic":false,"transfers":[' .. table.concat(parts, ",") .. ']}'
   return send("/v1/transfers/batch", body, {kinds = kinds, amounts = amounts, ids = ids})
end

function request()
   if batch_size > 0 then return batch_request() end
   return single_request()
end

local function created(kind, amount, id)
   stats.created = stats.created + 1
   if kind == SINGLE then
      stats.created_single = stats.created_single + 1
      stats.posted_amount = stats.posted_amount + amount
   elseif kind == PENDING then
      stats.created_pending = stats.created_pending + 1
      stats.pending_open_amount = stats.pending_open_amount + amount
      q_tail = q_tail + 1
      queue[q_tail] = {id, amount}
   elseif kind == POST then
      stats.created_post = stats.created_post + 1
      stats.posted_amount = stats.posted_amount + amount
      stats.pending_open_amount = stats.pending_open_amount - amount
   else
      stats.created_void = stats.created_void + 1
      stats.pending_open_amount = stats.pending_open_amount - amount
   end
end

local function sample_error(status, body)
   if #error_samples < 5 then
      table.insert(error_samples, status .. " " .. string.sub(body or "", 1, 300))
   end
end

local function batch_response(item, body)
   -- Items answer in order; an item's own "status" is created|exists|failed (a
   -- transfer's status is never one of these), so the n-th such value is item n's.
   local i = 0
   for s in string.gmatch(body, '"status":"(%a+)"') do
      if s == "created" or s == "exists" or s == "failed" then
         i = i + 1
         if s == "created" then
            created(item.kinds[i], item.amounts[i], item.ids[i])
         elseif s == "exists" then
            stats.exists = stats.exists + 1
         else
            stats.failed_items = stats.failed_items + 1
         end
      end
   end
   local _, refused = string.gsub(body, '"code":"exceeds_credits"', "")
   stats.exceeds_credits = stats.exceeds_credits + refused
   if i ~= #item.kinds then
      stats.unmatched = stats.unmatched + 1
      sample_error(0, "batch answered " .. i .. " of " .. #item.kinds .. " items")
   end
end

function response(status, resp_headers, body)
   stats.responses = stats.responses + 1
   local key = "status_" .. status
   stats[key] = (stats[key] or 0) + 1
   local rid = resp_headers["request-id"] or resp_headers["Request-Id"]
   local item = rid and inflight[rid]
   if not item then
      stats.unmatched = stats.unmatched + 1
      sample_error(status, body)
      return
   end
   inflight[rid] = nil
   count_unanswered(item, -1)
   if batch_size > 0 then
      if status == 200 then
         batch_response(item, body)
      else
         sample_error(status, body)
      end
   elseif status == 201 then
      created(item.kinds[1], item.amounts[1], item.ids[1])
   elseif status == 200 then
      stats.exists = stats.exists + 1
   elseif status == 422 and string.find(body, '"code":"exceeds_credits"', 1, true) then
      stats.exceeds_credits = stats.exceeds_credits + 1
   else
      sample_error(status, body)
   end
end

-- A minimal JSON encoder: numbers, strings, booleans and tables of them.
local function encode(v)
   local t = type(v)
   if t == "number" then
      if v == math.floor(v) then return string.format("%.0f", v) end
      return string.format("%.17g", v)
   elseif t == "string" then
      return '"' .. string.gsub(v, '[%c"\\]', function(c)
         return string.format("\\u%04x", string.byte(c))
      end) .. '"'
   elseif t == "boolean" then
      return tostring(v)
   elseif t == "table" then
      if #v > 0 or next(v) == nil then
         local parts = {}
         for i = 1, #v do parts[i] = encode(v[i]) end
         return "[" .. table.concat(parts, ",") .. "]"
      end
      local parts = {}
      for k, x in pairs(v) do
         table.insert(parts, encode(tostring(k)) .. ":" .. encode(x))
      end
      return "{" .. table.concat(parts, ",") .. "}"
   end
   return "null"
end

function done(summary, latency, requests)
   local total = {error_samples = {}}
   for _, thread in ipairs(threads) do
      for k, v in pairs(thread:get("stats")) do total[k] = (total[k] or 0) + v end
      for _, e in ipairs(thread:get("error_samples")) do table.insert(total.error_samples, e) end
   end
   total.duration_us = summary.duration
   total.wrk_requests = summary.requests
   total.bytes = summary.bytes
   total.socket_errors = {
      connect = summary.errors.connect, read = summary.errors.read,
      write = summary.errors.write, timeout = summary.errors.timeout,
   }
   total.wrk_status_errors = summary.errors.status
   total.latency_us = {
      min = latency.min, max = latency.max, mean = latency.mean, stdev = latency.stdev,
      p50 = latency:percentile(50), p90 = latency:percentile(90),
      p95 = latency:percentile(95), p99 = latency:percentile(99),
      p999 = latency:percentile(99.9),
   }
   local f = assert(io.open(out_path, "w"))
   f:write(encode(total))
   f:close()
end
