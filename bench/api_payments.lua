-- wrk script for `qianbao bench api`: P2P transfers and QR payments with unique Idempotency-Keys.
--
--   wrk -t1 -c64 -d30s --timeout 10s -s bench/api_payments.lua http://127.0.0.1:PORT \
--       -- POPULATION_FILE KEY_PREFIX AMOUNT_MIN AMOUNT_MAX
--
-- POPULATION_FILE has one request template per line, tab-separated:
--   kind (p2p|qr)  path  bearer token  device id  JSON body up to the amount value
-- The amount (fen) is drawn per request and the body closed with "}}". Requests go through the lines in
-- order (the bench shuffles them), so consecutive requests come from different payers.
-- The last line printed is "QIANBAO_WRK_RESULT {json}": counts by status and kind, latency percentiles
-- (microseconds, over every answered request), socket errors.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_number", #threads)
end

local templates = {}
local position = 0
local sent = 0
local prefix = "bench"
local amount_min, amount_max = 100, 1000
-- Globals, read by done() through thread:get().
statuses = {}
kinds = {}
samples = {}

function init(args)
   local path = args[1]
   prefix = (args[2] or prefix) .. "-" .. thread_number .. "-"
   amount_min = tonumber(args[3] or amount_min)
   amount_max = tonumber(args[4] or amount_max)
   for line in io.lines(path) do
      local kind, target, token, device, body = line:match("^([^\t]+)\t([^\t]+)\t([^\t]+)\t([^\t]+)\t(.+)$")
      if kind then
         table.insert(templates, {
            path = target,
            body = body,
            headers = {
               ["Authorization"] = "Bearer " .. token,
               ["Device-Id"] = device,
               ["Content-Type"] = "application/json",
            },
         })
      end
   end
   assert(#templates > 0, "no request templates in " .. tostring(path))
   -- Threads start at different places in the same cycle.
   position = math.floor((thread_number - 1) * #templates / 8) % #templates
   math.randomseed(thread_number * 7919)
end

function request()
   position = position % #templates + 1
   sent = sent + 1
   local t = templates[position]
   t.headers["Idempotency-Key"] = prefix .. sent
   local amount = math.random(amount_min, amount_max)
   return wrk.format("POST", t.path, t.headers, t.body .. amount .. "}}")
end

function response(status, headers, body)
   local key = tostring(status)
   statuses[key] = (statuses[key] or 0) + 1
   if status == 201 then
      -- A merchant payment's answer names its method; a P2P transfer's does not.
      local kind = body:find('"method"', 1, true) and "qr" or "p2p"
      kinds[kind] = (kinds[kind] or 0) + 1
   elseif samples[key] == nil then
      samples[key] = body:sub(1, 400)
   end
end

local function quote(s)
   s = s:gsub('[%c"\\]', function(c)
      if c == '"' then return '\\"' end
      if c == "\\" then return "\\\\" end
      return string.format("\\u%04x", c:byte())
   end)
   return '"' .. s .. '"'
end

local function object(t)
   local parts = {}
   for k, v in pairs(t) do
      local value = type(v) == "number" and string.format("%d", v) or quote(tostring(v))
      table.insert(parts, quote(tostring(k)) .. ":" .. value)
   end
   return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
   local all_statuses, all_kinds, all_samples = {}, {}, {}
   for _, thread in ipairs(threads) do
      for k, v in pairs(thread:get("statuses") or {}) do all_statuses[k] = (all_statuses[k] or 0) + v end
      for k, v in pairs(thread:get("kinds") or {}) do all_kinds[k] = (all_kinds[k] or 0) + v end
      for k, v in pairs(thread:get("samples") or {}) do all_samples[k] = all_samples[k] or v end
   end
   local lat = {
      p50 = latency:percentile(50.0),
      p90 = latency:percentile(90.0),
      p99 = latency:percentile(99.0),
      p999 = latency:percentile(99.9),
      max = latency.max,
      mean = latency.mean,
   }
   local e = summary.errors
   io.write("QIANBAO_WRK_RESULT {",
      '"duration_us":', string.format("%d", summary.duration),
      ',"requests":', string.format("%d", summary.requests),
      ',"bytes":', string.format("%d", summary.bytes),
      ',"errors":', object({connect = e.connect, read = e.read, write = e.write, status = e.status,
                            timeout = e.timeout}),
      ',"latency_us":', object(lat),
      ',"statuses":', object(all_statuses),
      ',"kinds":', object(all_kinds),
      ',"samples":', object(all_samples),
      "}\n")
end
