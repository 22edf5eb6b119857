-- For the specs: nginx serving Lua under `ljleak run`, in a private prefix (a temporary folder),
-- single process (daemon off, master_process off), on 127.0.0.1 and a free port; a few requests
-- over loopback, then a graceful stop (SIGQUIT). Nothing is sent anywhere but 127.0.0.1.
local cjson = require "cjson"
local fcntl = require "posix.fcntl"
local psignal = require "posix.signal"
local ptime = require "posix.time"
local socket = require "socket"
local stdlib = require "posix.stdlib"
local unistd = require "posix.unistd"
local wait = require "posix.sys.wait"

local h = require "t.helper"

local M = {}

M.NGINX = "/usr/sbin/nginx"
M.MODULES = "/usr/lib/nginx/modules"

-- Is Debian's nginx with the Lua module (and NDK, which it needs) installed?
function M.available()
   local f = io.open(M.MODULES .. "/ngx_http_lua_module.so")
   if f then f:close() end
   return f ~= nil and unistd.access(M.NGINX, "x") == 0
end

local HEAD = [[
# ndk_http_module must be loaded before the Lua module, which uses it.
load_module %s/ndk_http_module.so;
load_module %s/ngx_http_lua_module.so;
daemon off;
%s
error_log logs/error.log warn;
pid logs/nginx.pid;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path logs/body;
  proxy_temp_path logs/proxy;
  fastcgi_temp_path logs/fastcgi;
  uwsgi_temp_path logs/uwsgi;
  scgi_temp_path logs/scgi;
]]

local CONF = HEAD .. [[
  init_by_lua_block { require "ffi" }
  server {
    listen 127.0.0.1:%d;
    location / {
      content_by_lua_block {
        local ffi = require "ffi"
        local buf = ffi.new("char[?]", 64)
        ffi.copy(buf, "hello " .. ngx.var.uri)
        ngx.say(ffi.string(buf))
      }
    }
    location /leak {
      content_by_lua_block {
        local ffi = require "ffi"
        ffi.cdef "void *malloc(size_t);"
        ffi.C.malloc(321)
        ngx.say("leaked")
      }
    }
    # A regex in the configuration: nginx before 1.25.3 loses its PCRE2 compile context (nginx.supp).
    location ~ ^/re/(\w+)$ { return 204; }
  }
}
]]

local function sleep(seconds)
   ptime.nanosleep({tv_sec = math.floor(seconds), tv_nsec = math.floor(seconds % 1 * 1e9)})
end

-- A TCP port on 127.0.0.1 that nothing listens on now.
function M.free_port()
   local s = assert(socket.bind("127.0.0.1", 0))
   local _, port = s:getsockname()
   s:close()
   return tonumber(port)
end

-- One HTTP/1.0 GET of PATH on 127.0.0.1:PORT; the response body, or nil and a message.
local function get(port, path)
   local c, err = socket.connect("127.0.0.1", port)
   if not c then return nil, err end
   c:settimeout(30)
   c:send(("GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n"):format(path))
   local resp, rerr = c:receive("*a")
   c:close()
   if not resp then return nil, rerr end
   return resp:match("\r\n\r\n(.*)$")
end

-- Process models: one process (the tracker needs nginx to pass its variables on, as in
-- Test::Nginx's configs); or a master and a worker that runs as nobody (as root), with no env line.
local MODES = {
   single = "master_process off;\n# nginx clears the environment of what it runs but for these.\n"
      .. "env LD_PRELOAD;\nenv LJLEAK_DIR;",
   workers = "master_process on;\nworker_processes 1;\nuser nobody nogroup;",
}

-- nginx.conf for `ljleak soak --url`: one process (MODES.single), on 127.0.0.1:PORT, locations /grow and
-- /quiet calling t/growth/nginx_app.lua (from ROOT).
local SOAK_CONF = HEAD .. [[
  lua_package_path "%s/t/growth/?.lua;;";
  server {
    listen 127.0.0.1:%d;
    location /grow { content_by_lua_block { require("nginx_app").grow() } }
    location /quiet { content_by_lua_block { require("nginx_app").quiet() } }
  }
}
]]

-- Run `ljleak soak --url=http://127.0.0.1:PORT/PATH [EXTRA...] --json=... -- nginx`. Returns the
-- decoded report (or nil), ljleak's exit code, its stderr.
function M.soak(path, extra)
   local dir = h.tmpdir()
   assert(require("lfs").mkdir(dir .. "/logs"))
   local port = M.free_port()
   h.write_file(dir .. "/nginx.conf", SOAK_CONF:format(M.MODULES, M.MODULES, MODES.single, h.ROOT, port))
   local json = dir .. "/report.json"
   local argv = {h.BIN, "soak", "--url=http://127.0.0.1:" .. port .. path, "--json=" .. json}
   for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
   for _, a in ipairs({"--", M.NGINX, "-p", dir .. "/", "-c", dir .. "/nginx.conf"}) do argv[#argv + 1] = a end
   local code, _, err = h.run(argv)
   local text = h.read_file(json)
   err = (err or "") .. (h.read_file(dir .. "/logs/error.log") or "")
   h.rmtree(dir)
   return text and cjson.decode(text), code, err
end

-- Run nginx under `ljleak run [EXTRA...] --json=...`, GET each of PATHS (default /a, /b, /c),
-- stop it. Returns the decoded report (or nil), ljleak's exit code, its stderr, and the bodies.
-- OPTS.mode: "single" (default) or "workers".
function M.run(extra, paths, opts)
   paths = paths or {"/a", "/b", "/c"}
   local dir = h.tmpdir()
   assert(require("lfs").mkdir(dir .. "/logs"))
   require("posix.sys.stat").chmod(dir, tonumber("755", 8))   -- a worker running as nobody reads its prefix
   local port = M.free_port()
   h.write_file(dir .. "/nginx.conf", CONF:format(M.MODULES, M.MODULES, MODES[opts and opts.mode or "single"], port))
   local json, err_file = dir .. "/report.json", dir .. "/ljleak.err"
   local argv = {h.BIN, "run", "--json=" .. json}
   for _, a in ipairs(extra or {}) do argv[#argv + 1] = a end
   for _, a in ipairs({"--", M.NGINX, "-p", dir .. "/", "-c", dir .. "/nginx.conf"}) do argv[#argv + 1] = a end
   local pid = assert(unistd.fork())
   if pid == 0 then
      local null = fcntl.open("/dev/null", fcntl.O_WRONLY)
      local e = fcntl.open(err_file, fcntl.O_WRONLY + fcntl.O_CREAT + fcntl.O_TRUNC, 384)
      unistd.dup2(null, 1)
      unistd.dup2(e, 2)
      unistd.chdir(h.ROOT)
      stdlib.setenv("LJLEAK_DIR", nil)
      local t = {[0] = argv[1]}
      for i = 2, #argv do t[i - 1] = argv[i] end
      unistd.execp(argv[1], t)
      unistd._exit(127)
   end
   -- Wait (Valgrind is slow to start) until nginx answers, or ljleak gave up.
   local bodies, ended, how, status = {}, false, nil, nil
   local deadline = os.time() + 120
   while os.time() < deadline do
      local wpid, w, s = wait.wait(pid, wait.WNOHANG)
      if wpid == pid then ended, how, status = true, w, s break end
      if get(port, "/ready") then break end
      sleep(0.2)
   end
   if not ended then
      for i, p in ipairs(paths) do bodies[i] = get(port, p) end
      local f = io.open(dir .. "/logs/nginx.pid")
      local npid = f and tonumber(f:read("*l"))
      if f then f:close() end
      -- A graceful stop; nginx under Valgrind sometimes misses the first SIGQUIT: send it again
      -- every 2 s (as Test::Nginx does), then give up on it after 2 minutes.
      for i = 1, 600 do
         if i % 10 == 1 and i < 600 then
            if npid then psignal.kill(npid, psignal.SIGQUIT) else psignal.kill(pid, psignal.SIGTERM) end
         end
         local wpid, w, st = wait.wait(pid, wait.WNOHANG)
         if wpid == pid then how, status = w, st break end
         sleep(0.2)
      end
      if not how then
         psignal.kill(pid, psignal.SIGKILL)
         local _
         _, how, status = wait.wait(pid)
      end
   end
   local code = how == "exited" and status or 128 + (status or 0)
   local text = h.read_file(json)
   local stderr = (h.read_file(err_file) or "") .. (h.read_file(dir .. "/logs/error.log") or "")
   h.rmtree(dir)
   return text and cjson.decode(text), code, stderr, bodies
end

return M
