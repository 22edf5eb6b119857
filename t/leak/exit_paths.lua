-- 100 blocks of 77 bytes dropped (the cdata that held them collected), then the process ends the
-- way arg[1] says: close (os.exit(0, true)), noclose (os.exit(0)), cexit (exit() from C), _exit,
-- quick_exit, return (the end of the script), fork (a child leaks them and exits with os.exit(0)).
jit.off()   -- no JIT code: nothing else of the program allocates, so a block of ours is the lowest
local ffi = require "ffi"
ffi.cdef [[
void *malloc(size_t); void exit(int); void _exit(int); void quick_exit(int);
int fork(void); int waitpid(int, int *, int);
]]
local C = ffi.C
local mode = arg[1]

local function leak()
   for _ = 1, 100 do
      local p = C.malloc(77)   -- line 15
      p = nil
   end
   collectgarbage()
   collectgarbage()
end

if mode == "fork" then
   local pid = C.fork()
   if pid == 0 then
      leak()
      os.exit(0)
   end
   C.waitpid(pid, nil, 0)
   return
end
leak()
if mode == "close" then os.exit(0, true)
elseif mode == "noclose" then os.exit(0)
elseif mode == "cexit" then C.exit(0)
elseif mode == "_exit" then C._exit(0)
elseif mode == "quick_exit" then C.quick_exit(0)
end
