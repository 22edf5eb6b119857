-- Running the command: spawn it (the child never runs Lua), wait for it while forwarding the
-- signals a CI runner or a terminal sends ljleak (INT, TERM, QUIT, HUP), and end it on --timeout.
local psignal = require "posix.signal"
local ptime = require "posix.time"

local M = {}

-- After the first signal (or the timeout), how long the program gets to finish before SIGKILL.
M.GRACE = 10

local core   -- ljleak.core, loaded at first use

local function now()
   local t = ptime.clock_gettime(ptime.CLOCK_MONOTONIC)
   return t.tv_sec + t.tv_nsec * 1e-9
end
M.now = now

-- The name of signal SIG ("SIGTERM"), or "signal N".
function M.signal_name(sig)
   for k, v in pairs(psignal) do
      if v == sig and k:match("^SIG%u+$") and k ~= "SIG_DFL" and k ~= "SIG_IGN" then return k end
   end
   return "signal " .. sig
end

-- Run PATH with ARGV (argv[1]: the name it sees) and ENV (NAME = value, or false to remove it).
-- OPTS.timeout: seconds; OPTS.tick(pid): called about four times a second while it runs (every
-- OPTS.interval seconds, if given; or a function of the seconds it has run, giving them).
-- Returns {pid, how = "exited"|"killed", status, interrupted = nil | {signal, by = "signal"|"timeout"}},
-- or nil, message, errno when it could not be started.
function M.run(path, argv, env, opts)
   opts = opts or {}
   core = core or require "ljleak.core"
   io.stdout:flush()
   io.stderr:flush()
   local pid, err, errno = core.spawn(path, argv, env)
   if not pid then return nil, err, errno end
   local start = now()
   local deadline = opts.timeout and start + opts.timeout
   local interrupted, kill_at, killed
   while true do
      local t = now()
      local wait = nil
      if deadline then wait = math.max(0, deadline - t) end
      if kill_at then wait = math.max(0, math.min(wait or math.huge, kill_at - t)) end
      if opts.tick then
         local interval = opts.interval or 0.25
         if type(interval) == "function" then interval = interval(t - start) end
         wait = math.min(wait or interval, interval)
      end
      local what, a, from_terminal = core.wait(pid, wait)
      if what == "exited" or what == "killed" then
         return {pid = pid, how = what, status = a, interrupted = interrupted}
      elseif what == "signal" then
         if interrupted then  -- a second one: no more waiting
            psignal.kill(pid, psignal.SIGKILL)
            killed = true
         else
            interrupted = {signal = a, by = "signal"}
            -- From the terminal, the whole foreground group got it; else pass it on.
            if not from_terminal then psignal.kill(pid, a) end
            kill_at = now() + M.GRACE
         end
      else
         t = now()
         if kill_at and t >= kill_at and not killed then
            psignal.kill(pid, psignal.SIGKILL)
            killed, kill_at = true, nil
         elseif deadline and t >= deadline and not interrupted then
            interrupted = {signal = psignal.SIGTERM, by = "timeout", seconds = opts.timeout}
            psignal.kill(pid, psignal.SIGTERM)
            kill_at, deadline = t + M.GRACE, nil
         end
         if opts.tick then opts.tick(pid) end
      end
   end
end

-- Call RUNNING() about ten times a second until it returns false or TIMEOUT seconds passed, or a
-- signal came (then it is returned, with from_terminal). RUNNING's last answer is returned first.
function M.wait_while(running, timeout)
   core = core or require "ljleak.core"
   local waited = 0
   while true do
      local still = running()
      if not still or waited >= timeout then return still end
      local sig, from_terminal = core.pending_signal()
      if sig then return still, sig, from_terminal end
      ptime.nanosleep({tv_sec = 0, tv_nsec = 100000000})
      waited = waited + 0.1
   end
end

return M
