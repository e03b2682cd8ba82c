-- wrk script for benches/go/httpsvc. Each thread takes 8 steps per session:
--   login s(j), get s(j-8) ×3, logout s(j-16), put, fetch ×2 (4096 shared cache keys)
-- so every request takes a map path. A session is read 64 requests and ended
-- 128 requests after its login: more than a thread's connections have in
-- flight, so its login has been answered by then. Run by benches/overhead.py:
--   wrk -t2 -c32 -d10s --latency -s load.lua http://127.0.0.1:PORT

local threads = {}

function setup(thread)
   thread:set("tid", #threads)
   table.insert(threads, thread)
end

function init(args)
   n = 0
   math.randomseed(1000 + tid)
end

local function sid(j)
   return "s" .. tid .. "-" .. j
end

function request()
   local step, j = n % 8, math.floor(n / 8)
   n = n + 1
   if step == 0 then
      return wrk.format("GET", "/login?sid=" .. sid(j) .. "&user=u" .. tid)
   elseif step <= 3 then
      -- the first sessions' reads find none (404): 24 requests per thread
      return wrk.format("GET", "/get?sid=" .. sid(j - 8))
   elseif step == 4 then
      return wrk.format("GET", "/logout?sid=" .. sid(j - 16))
   elseif step == 5 then
      return wrk.format("GET", "/put?k=k" .. math.random(0, 4095) .. "&n=" .. math.random(64, 512))
   else
      return wrk.format("GET", "/fetch?k=k" .. math.random(0, 4095))
   end
end
