-- Before anything runs: finding CMD as execvp would, and whether LD_PRELOAD can put the tracker
-- into it (not a setuid/setgid or statically linked program, nor a #! script run by one).
local bit = require "bit"
local lfs = require "lfs"
local stat = require "posix.sys.stat"
local unistd = require "posix.unistd"

local util = require "ljleak.util"

local M = {}

function M.is_file(path)
   return lfs.attributes(path, "mode") == "file"
end

function M.is_executable_file(path)
   return lfs.attributes(path, "mode") == "file" and unistd.access(path, "x") == 0
end

-- CMD's path, searched on PATH unless it contains a slash (as execvp does). Nil if not found.
function M.resolve_command(name)
   if name == "" then return nil end
   if name:find("/", 1, true) then
      return M.is_executable_file(name) and name or nil
   end
   local path = os.getenv("PATH") or "/usr/local/bin:/usr/bin:/bin"
   for dir in (path .. ":"):gmatch("([^:]*):") do
      local candidate = (dir == "" and "." or dir) .. "/" .. name
      if M.is_executable_file(candidate) then return candidate end
   end
   return nil
end

local function read_head(path, n)
   local f = io.open(path, "rb")
   if not f then return nil end
   local data = f:read(n)
   f:close()
   return data
end

-- Unsigned little- or big-endian integer of SIZE bytes at 0-based offset POS in S.
local function uint(s, pos, size, big)
   local n = 0
   for i = 1, size do
      local b = s:byte(pos + (big and i or size - i + 1))
      if not b then return nil end
      n = n * 256 + b
   end
   return n
end

local PT_INTERP = 3

-- For an ELF file: true if it has a PT_INTERP (is dynamically linked), false if static.
-- Nil if PATH is not a readable ELF file.
local function elf_is_dynamic(path)
   local f = io.open(path, "rb")
   if not f then return nil end
   local ehdr = f:read(64)
   if not ehdr or #ehdr < 52 or ehdr:sub(1, 4) ~= "\127ELF" then
      f:close()
      return nil
   end
   local is64, big = ehdr:byte(5) == 2, ehdr:byte(6) == 2
   local phoff, phentsize, phnum
   if is64 then
      phoff, phentsize, phnum = uint(ehdr, 32, 8, big), uint(ehdr, 54, 2, big), uint(ehdr, 56, 2, big)
   else
      phoff, phentsize, phnum = uint(ehdr, 28, 4, big), uint(ehdr, 42, 2, big), uint(ehdr, 44, 2, big)
   end
   if not phoff or not phnum or phnum == 0 or not phentsize or phentsize < 4 then
      f:close()
      return false
   end
   f:seek("set", phoff)
   local phdrs = f:read(phentsize * phnum) or ""
   f:close()
   for i = 0, phnum - 1 do
      if uint(phdrs, i * phentsize, 4, big) == PT_INTERP then return true end
   end
   return false
end

-- Would the kernel start PATH in secure-execution mode, where ld.so ignores LD_PRELOAD paths?
local function is_secure_exec(path)
   local st = stat.stat(path)
   if not st then return false end
   local setuid = bit.band(st.st_mode, stat.S_ISUID) ~= 0 and st.st_uid ~= unistd.geteuid()
   local setgid = bit.band(st.st_mode, stat.S_ISGID) ~= 0 and bit.band(st.st_mode, stat.S_IXGRP) ~= 0
      and st.st_gid ~= unistd.getegid()
   return setuid or setgid
end

-- Fail if LD_PRELOAD cannot put the tracker into the program at PATH (the one exec will run).
local function check_binary(path, shown)
   if is_secure_exec(path) then
      util.fail("usage", "%s is setuid/setgid: the dynamic loader ignores LD_PRELOAD for it, "
         .. "so ljleak cannot trace it (run a copy without those bits)", shown)
   end
   if elf_is_dynamic(path) == false then
      util.fail("usage", "%s is statically linked: LD_PRELOAD cannot load the tracker into it "
         .. "(build it dynamically linked, or use --engine=valgrind)", shown)
   end
end

-- Check CMD at PATH, and for a `#!` script its interpreter (one level; for `#!/usr/bin/env prog`
-- also prog, found on PATH).
function M.check_traceable(path)
   check_binary(path, path)
   local head = read_head(path, 256)
   if not head or head:sub(1, 2) ~= "#!" then return end
   local line = head:match("^#!([^\n]*)") or ""
   local interp, rest = line:match("^%s*(%S+)%s*(.-)%s*$")
   if not interp then return end
   local shown = ("%s (the interpreter of %s)"):format(interp, path)
   if not M.is_executable_file(interp) then
      util.fail("not_found", "%s: bad interpreter %s: not found or not executable", path, interp)
   end
   check_binary(interp, shown)
   if interp:match("[^/]*$") == "env" then
      for word in rest:gmatch("%S+") do
         if not word:match("^%-") and not word:find("=", 1, true) then
            local target = M.resolve_command(word)
            if target then
               check_binary(target, ("%s (run by %s)"):format(target, path))
            end
            break
         end
      end
   end
end

return M
