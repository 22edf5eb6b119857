-- busted spec for the status line of long runs: on a terminal (a pseudo-terminal here, read back
-- through a small terminal emulator, t/vt.lua), it is drawn on the last row, out of the region the
-- program's output scrolls in, so that neither writes over the other, and is gone at the end; when
-- stderr is not a terminal there is none. Runs Valgrind itself, so t/run.sh runs it outside the
-- tracker.
local fcntl = require "posix.fcntl"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"
local h = require "t.helper"
local vt = require "t.vt"
local valgrind = require "ljleak.engine.valgrind"

local ROWS, COLS = 12, 100

-- Run ARGV on a new pseudo-terminal of ROWS x COLS (its stdin, stdout and stderr). Returns the exit
-- code and everything written to the terminal.
local function on_terminal(argv)
   local master = assert(stdlib.openpt(fcntl.O_RDWR + fcntl.O_NOCTTY))
   assert(stdlib.grantpt(master))
   assert(stdlib.unlockpt(master))
   local slave = assert(stdlib.ptsname(master))
   -- (held open until the child has it: with no process holding the terminal, reading it fails)
   local held = assert(fcntl.open(slave, fcntl.O_RDWR + fcntl.O_NOCTTY))
   local code = h.run({"stty", "-F", slave, "rows", tostring(ROWS), "cols", tostring(COLS)}, {env = h.UNTRACED})
   assert(code == 0, "stty failed")
   local pid = assert(unistd.fork())
   if pid == 0 then
      unistd.close(master)
      unistd.setpid("s")   -- a session of its own, with the terminal as its controlling one
      local fd = fcntl.open(slave, fcntl.O_RDWR) or unistd._exit(126)
      for target = 0, 2 do unistd.dup2(fd, target) end
      unistd.close(held)
      unistd.chdir(h.ROOT)
      local t = {[0] = argv[1]}
      for i = 2, #argv do t[i - 1] = argv[i] end
      unistd.execp(argv[1], t)
      unistd._exit(127)
   end
   unistd.close(held)
   local chunks = {}
   while true do
      local data = unistd.read(master, 65536)
      if not data or #data == 0 then break end   -- EIO: every process with the terminal ended
      chunks[#chunks + 1] = data
   end
   unistd.close(master)
   local _, how, status = wait.wait(pid)
   return how == "exited" and status or 128 + status, table.concat(chunks)
end

local have_valgrind = valgrind.find() ~= nil

describe("the status line of a long run", function()
   for _, engine in ipairs({"tracker", "valgrind"}) do
      it("never writes over the program's output, nor it over the status line, under the " .. engine, function()
         if engine == "valgrind" and not have_valgrind then return pending("needs valgrind") end
         local n = engine == "tracker" and 8 or 6
         local code, out = on_terminal({h.BIN, "run", "--engine=" .. engine, "--", "luajit", "t/fixture/chatty.lua",
                                        tostring(n)})
         assert.are.equal(0, code, out)
         local screen = vt.new(ROWS, COLS)
         screen:feed(out)
         local lines = screen:all_lines()
         -- every line of the program came out whole, in order, each on a line of its own
         local at = 0
         for i = 1, n do
            local want = ("line %d of the program, written in two parts"):format(i)
            local found
            for k = at + 1, #lines do
               if lines[k] == want then
                  found = k
                  break
               end
            end
            assert.is_truthy(found, ("%q not found whole in:\n%s"):format(want, table.concat(lines, "\n")))
            at = found
         end
         -- then ljleak's report; the status line is gone, the whole screen scrolls again
         assert.are.equal("ljleak: leak check of 1 process", lines[at + 1])
         for _, line in ipairs(lines) do assert.is_nil(line:find("elapsed", 1, true), line) end
         assert.are.same({1, ROWS}, {screen.top, screen.bottom})
         -- and the status line was drawn (on the last row, the cursor saved and restored around it)
         local drawn = select(2, out:gsub("\0277\27%[" .. ROWS .. ";1H\27%[2Kljleak: [^\27]*elapsed[^\27]*\0278", ""))
         assert.is_true(drawn >= 2, out)
      end)
   end

   it("is not drawn when stderr is not a terminal", function()
      local _, code, err, out = h.ljleak_run({"luajit", "t/fixture/chatty.lua", "6"})
      assert.are.equal(0, code, err)
      assert.is_nil(err:find("\27", 1, true))
      assert.is_nil(err:find("elapsed", 1, true))
      assert.matches("line 6 of the program, written in two parts\n$", out)
   end)
end)
