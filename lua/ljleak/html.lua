-- The HTML report: one self-contained page (nothing loaded from the network) with the verdict
-- (ljleak's exit code and why), the summary and the heap, what each test lost, the suppressions
-- used, a table of the records (sortable, filterable, each stack expandable) and a flame graph of
-- the leaked bytes by stack, from the allocation site up through the Lua frames (an SVG the page
-- draws itself; click a frame to zoom). The summaries are written as HTML; the records go into the
-- page as JSON (each text once) that its script renders, so that ten thousand records stay usable:
-- the table shows a hundred rows at a time, the flame graph draws only frames a pixel wide or more.
-- The page's state (filter, kinds, sort, zoom) is kept in its address (#filter=...&zoom=...).
local growthplot = require "ljleak.growthplot"
local json = require "ljleak.json"
local model = require "ljleak.model"
local text = require "ljleak.text"

local M = {}

local null, is_suppressed, esc = model.null, model.is_suppressed, json.markup
local EMPTY = json.array()

-- How every page starts (format.owns.html knows an ljleak page by it).
M.HEAD = '<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>ljleak report</title>'

local function value(v)
   if v == nil or v == null then return nil end
   return v
end

-- -- The page's data -------------------------------------------------------------------------
-- {strings = {text...}, lists = {{string index...}...}, records = {record...}, listed = {the kinds
-- shown at first}}, indexes from 0 (-1: none). A record: {id, kind, blocks, bytes, pid, test,
-- lua (its innermost Lua frame), top (its top C frame below the allocation function), stack (the
-- lines of its stack as the text report shows them: a list), all (every frame's line, when the
-- stack was folded: a list, or -1), path (its frames' names from the allocation function up
-- through the Lua frames: a list), c (how many of those are C frames), owner (the id of the record
-- that holds it, or 0), note}.

local function page_data(report, opts)
   local strings, string_id = json.array(), {}
   local function str(s)
      s = value(s)
      if s == nil then return -1 end
      local i = string_id[s]
      if not i then
         i = #strings
         strings[i + 1] = s
         string_id[s] = i
      end
      return i
   end
   local lists, list_id = json.array(), {}
   local function list(items)
      local key = table.concat(items, ",")
      local i = list_id[key]
      if not i then
         i = #lists
         lists[i + 1] = json.array(items)
         list_id[key] = i
      end
      return i
   end
   -- The lines of a stack as the text report shows them (FOLD: folded below LuaJIT's VM).
   local function lines(frames, lua, fold)
      local out = {}
      local function line(l) out[#out + 1] = str(l) end
      if fold then
         text.stack_lines(line, frames, lua, "")
      else
         for _, f in ipairs(lua) do line("in Lua " .. text.lua_frame_text(f)) end
         text.frame_lines(line, frames, "")
      end
      return list(out)
   end

   local records = json.array()
   for _, leak in ipairs(report.leaks or EMPTY) do
      if not is_suppressed(leak) then
         local frames, lua = value(leak.frames) or EMPTY, value(leak.lua) or EMPTY
         local vm = #lua > 0 and model.first_vm_frame(frames)
         local names = text.stack_names(frames, lua)
         local path = {}
         for i, n in ipairs(names) do path[i] = str(n) end
         local top = frames[2] and vm ~= 2 and frames[2] or frames[1]
         records[#records + 1] = json.array({
            value(leak.id) or #records + 1, leak.kind, leak.blocks, leak.bytes, value(leak.pid) or -1,
            str(leak.test), lua[1] and str(text.lua_frame_text(lua[1])) or -1, top and str(text.frame_name(top)) or -1,
            lines(frames, lua, true), vm and lines(frames, lua, false) or -1, list(path), #names - #lua,
            value(leak.owner) or 0, str(leak.note),
         })
      end
   end
   local listed = json.array()
   local kinds = text.listed_kinds(opts)
   for _, k in ipairs(model.KINDS) do
      if kinds[k] then listed[#listed + 1] = k end
   end
   return {strings = strings, lists = lists, records = records, listed = listed}
end

-- The data as JSON inside a <script> element: no "<" in it (one could end the element), each
-- written as \u003c (they can only be in strings).
local function put_data(data, sink)
   local inner = json.sink(function(buf)
      sink.b:put((buf:tostring():gsub("<", "\\u003c")))
      json.drain(sink)
   end)
   json.write(data, inner)
end

-- -- The summaries, as HTML ------------------------------------------------------------------

local function amount_cells(t)
   return ('<td class="num blocks">%d</td><td class="num bytes">%d</td>'):format(t.blocks, t.bytes)
end

local function verdict_html(report)
   local v = value(report.verdict)
   if not v then
      return '<div id="verdict" class="verdict unknown">This report does not say what ljleak exited with '
         .. "(it was not written by <code>ljleak run</code>).</div>\n"
   end
   local failed = v.exit_code ~= 0
   return ('<div id="verdict" class="verdict %s" data-exit-code="%d"><span class="code">ljleak exited with %d</span>'
      .. ' <span class="why">%s</span></div>\n'):format(failed and "failed" or "passed", v.exit_code, v.exit_code,
      esc(v.why or ""))
end

local function summary_html(report)
   local summary = value(report.summary) or model.summarize(report.leaks or EMPTY)
   local out = {'<table id="summary"><thead><tr><th>kind</th><th>blocks</th><th>bytes</th></tr></thead><tbody>'}
   local names = {unpack(model.KINDS)}
   names[#names + 1] = "suppressed"
   for _, k in ipairs(names) do
      out[#out + 1] = ('<tr data-kind="%s"><td class="kind k-%s">%s</td>%s</tr>'):format(k, k, k,
         amount_cells(summary[k] or {blocks = 0, bytes = 0}))
   end
   out[#out + 1] = "</tbody></table>\n<table id=\"totals\"><tbody>"
   local heap = value(report.heap)
   local function n(field, v) return ('<span class="num" data-field="%s">%d</span>'):format(field, v) end
   if heap then
      out[#out + 1] = ("<tr><th>in use at exit</th><td>%s bytes in %s blocks</td></tr><tr><th>total heap usage</th>"
         .. "<td>%s allocs, %s frees, %s bytes allocated</td></tr>"):format(n("in_use.bytes", heap.in_use.bytes),
         n("in_use.blocks", heap.in_use.blocks), n("allocs", heap.allocs), n("frees", heap.frees),
         n("allocated", heap.allocated))
   end
   local errors = model.summarize({}, report.errors or EMPTY).error_totals
   out[#out + 1] = ('<tr><th>errors (other than leaks)</th><td id="errors-total" data-records="%d" data-count="%d">%s'
      .. "%s</td></tr></tbody></table>\n"):format(errors.records, errors.count, esc(text.plural(errors.count, "error")),
      errors.records > 0 and esc((" from %s"):format(text.plural(errors.records, "record"))) or "")
   return table.concat(out)
end

-- A section: heading TITLE, then the table ID of the columns HEADS and ROWS (each a row's HTML);
-- nothing when there is no row.
local function section_table(title, id, heads, rows)
   if #rows == 0 then return "" end
   return ('<h2>%s</h2>\n<table id="%s"><thead><tr><th>%s</th></tr></thead><tbody>%s</tbody></table>\n'):format(
      title, id, table.concat(heads, "</th><th>"), table.concat(rows))
end

local function processes_html(report)
   local rows = {}
   for _, p in ipairs(report.processes or EMPTY) do
      local cmd = value(p.command) and #p.command > 0 and text.command_text(p.command, 1000) or value(p.exe) or ""
      local heap = value(p.heap)
      local state = p.checked == false and ("not checked: " .. (value(p.reason) or ""))
         or (heap and text.heap_text(heap)) or ""
      rows[#rows + 1] = ('<tr data-pid="%s"><td class="num">%s</td><td class="cmd">%s</td><td>%s</td></tr>'):format(
         esc(tostring(value(p.pid) or "")), esc(tostring(value(p.pid) or "?")), esc(cmd), esc(state))
   end
   return section_table("Processes", "processes", {"pid", "command line", "heap"}, rows)
end

local function tests_html(report)
   local tests = text.lost_by_test(report)
   local rows = {}
   for _, t in ipairs(tests) do
      rows[#rows + 1] = ('<tr><td class="test">%s</td>%s</tr>'):format(esc(t.name), amount_cells(t))
   end
   return section_table("Lost by test", "tests", {"test", "blocks", "bytes"}, rows)
end

local function suppressions_html(report)
   local used = value(report.suppressions) or EMPTY
   local rows = {}
   for _, u in ipairs(used) do
      local count = (u.count or 0) > 0 and u.count or u.records or 0
      local where = u.file and u.line and ("%s:%d"):format(u.file, u.line) or u.file or ""
      rows[#rows + 1] = ('<tr><td class="num">%d</td><td class="num">%s</td><td>%s</td><td class="where">%s</td></tr>')
         :format(count, (u.blocks or 0) > 0 and tostring(u.bytes) or "-", esc(u.name), esc(where))
   end
   return section_table("Suppressions used", "suppressions", {"count", "bytes", "name", "where"}, rows)
end

local function errors_html(report)
   local items = {}
   for _, e in ipairs(report.errors or EMPTY) do
      if not is_suppressed(e) then
         local lines = {}
         local function line(l) lines[#lines + 1] = l end
         text.stack_lines(line, value(e.frames) or EMPTY, value(e.lua) or EMPTY, "")
         for _, aux in ipairs(value(e.aux) or EMPTY) do
            if value(aux.what) then line(aux.what) end
            text.stack_lines(line, value(aux.frames) or EMPTY, value(aux.lua) or EMPTY, "  ")
         end
         local times = (value(e.count) or 1) > 1 and (" (%d times)"):format(e.count) or ""
         items[#items + 1] = ('<div class="error"><p><span class="k-definite">%s</span>, pid %s%s: %s</p><pre>%s</pre>'
            .. "</div>"):format(esc(e.kind), esc(tostring(value(e.pid) or "?")), times, esc(e.message),
            esc(table.concat(lines, "\n")))
      end
   end
   if #items == 0 then return "" end
   return '<h2>Errors</h2>\n<div id="errors">' .. table.concat(items, "\n") .. "</div>\n"
end

local function problems_html(report)
   local probs = value(report.problems) or EMPTY
   if #probs == 0 then return "" end
   local items = {}
   for _, p in ipairs(probs) do
      local who = value(p.file) or (value(p.pid) and "pid " .. p.pid) or ""
      items[#items + 1] = ("<li>%s%s</li>"):format(who ~= "" and esc(who) .. ": " or "", esc(p.message))
   end
   return '<h2>Problems</h2>\n<ul id="problems">' .. table.concat(items) .. "</ul>\n"
end

-- -- The page --------------------------------------------------------------------------------

local STYLE = [==[
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em 2em;color:#222}
h1{font-size:1.4em;margin:0 0 .3em} h2{font-size:1.15em;margin:1.5em 0 .5em}
code,pre,.cmd,.mono{font-family:ui-monospace,monospace;font-size:12.5px}
table{border-collapse:collapse} td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f3f3f3} .num{text-align:right;font-variant-numeric:tabular-nums}
.verdict{padding:.7em 1em;border-radius:4px;margin:1em 0;font-size:1.05em}
.verdict.failed{background:#fde8e8;border:1px solid #e0a0a0} .verdict.passed{background:#e6f4e6;border:1px solid #9c9}
.verdict.unknown{background:#f3f3f3;border:1px solid #ccc} .verdict .code{font-weight:bold}
.k-definite{color:#b00020} .k-indirect{color:#b35c00} .k-possible{color:#8a6d00} .k-reachable{color:#666}
.k-suppressed{color:#888} #totals{margin-top:.6em}
#controls{margin:.5em 0} #controls input[type=search]{width:28em;padding:3px 6px} #controls label{margin-left:1em}
#records{width:100%} #records th{cursor:pointer;user-select:none;white-space:nowrap}
#records th.sorted-asc::after{content:" \25B2"} #records th.sorted-desc::after{content:" \25BC"}
#records tr.rec{cursor:pointer} #records tr.rec:hover{background:#f7f7ff} #records tr.rec.open{background:#eef}
#records td.lua,#records td.top,#records td.test{font-family:ui-monospace,monospace;font-size:12.5px}
#records tr.stack td{background:#fafafa} #records pre{margin:.3em 0;white-space:pre-wrap}
.owner{color:#666;font-size:.9em} #more{margin:.6em 0}
#flame{width:100%;overflow:hidden;border:1px solid #ddd;background:#fff}
#flame g.frame{cursor:pointer} #flame text{font:11px ui-monospace,monospace;fill:#000;pointer-events:none}
#flame g.frame:hover rect{stroke:#000;stroke-width:.5}
.hint{color:#666;font-size:.92em}
]==]

-- The page's script: reads the data, renders the records' table and the flame graph, keeps the
-- state in the address.
local SCRIPT = [==[
(function () {
"use strict";
var D = JSON.parse(document.getElementById("ljleak-data").textContent);
var S = D.strings, L = D.lists, PAGE = 100, ROW = 18;
var KINDS = ["definite", "indirect", "possible", "reachable"];
var RANK = {definite: 1, indirect: 2, possible: 3, reachable: 4};
function str(i) { return i >= 0 ? S[i] : ""; }
var R = D.records.map(function (a) {
  return {id: a[0], kind: a[1], blocks: a[2], bytes: a[3], pid: a[4], test: str(a[5]), lua: str(a[6]),
          top: str(a[7]), stack: a[8], all: a[9], path: a[10], c: a[11], owner: a[12], note: str(a[13]),
          search: null};
});
var state = {filter: "", kinds: {}, sort: "id", desc: false, zoom: [], shown: PAGE};
var open = {};

function esc(s) {
  return String(s).replace(/[&<>"']/g, function (c) {
    return {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c];
  });
}
function plural(n, w) { return n + " " + w + (n === 1 ? "" : "s"); }

// -- State in the address ------------------------------------------------------------------
function readHash() {
  var h = {}, parts = location.hash.replace(/^#/, "").split("&");
  parts.forEach(function (p) {
    var i = p.indexOf("=");
    if (i > 0) h[p.slice(0, i)] = decodeURIComponent(p.slice(i + 1));
  });
  state.filter = h.filter || "";
  state.kinds = {};
  (h.kinds !== undefined ? h.kinds.split(",") : D.listed).forEach(function (k) { if (k) state.kinds[k] = true; });
  state.sort = h.sort || "id";
  state.desc = h.desc === "1";
  state.zoom = h.zoom ? h.zoom.split(",").map(Number) : [];
  state.shown = PAGE;
}
function writeHash() {
  var kinds = KINDS.filter(function (k) { return state.kinds[k]; }).join(",");
  var parts = [];
  if (state.filter) parts.push("filter=" + encodeURIComponent(state.filter));
  if (kinds !== D.listed.join(",")) parts.push("kinds=" + kinds);
  if (state.sort !== "id") parts.push("sort=" + state.sort);
  if (state.desc) parts.push("desc=1");
  if (state.zoom.length) parts.push("zoom=" + state.zoom.join(","));
  var h = parts.length ? "#" + parts.join("&") : "";
  if (h !== location.hash && !(h === "" && location.hash === "#")) {
    try { history.replaceState(null, "", h || location.pathname); } catch (e) { /* an address it refuses */ }
  }
}

// -- Which records ---------------------------------------------------------------------------
function searchText(r) {
  if (r.search === null) {
    r.search = [r.id, r.kind, r.pid, r.test, r.lua, r.top, r.note].concat(L[r.stack].map(str)).join("\n").toLowerCase();
  }
  return r.search;
}
function selected() {
  var f = state.filter.toLowerCase();
  return R.filter(function (r) { return state.kinds[r.kind] && (!f || searchText(r).indexOf(f) >= 0); });
}
var KEYS = {
  id: function (r) { return r.id; }, kind: function (r) { return RANK[r.kind] * 1e9 + r.id; },
  blocks: function (r) { return r.blocks; }, bytes: function (r) { return r.bytes; },
  pid: function (r) { return r.pid; }, test: function (r) { return r.test; }, lua: function (r) { return r.lua; },
  top: function (r) { return r.top; }
};
function sorted(list) {
  var key = KEYS[state.sort] || KEYS.id, sign = state.desc ? -1 : 1;
  return list.slice().sort(function (a, b) {
    var x = key(a), y = key(b);
    if (x < y) return -sign;
    if (x > y) return sign;
    return a.id - b.id;
  });
}

// -- The table -------------------------------------------------------------------------------
function stackHtml(r, all) {
  var lines = L[all && r.all >= 0 ? r.all : r.stack].map(str);
  var more = r.all >= 0 ? '<button class="frames" data-id="' + r.id + '">' +
    (all ? "fold LuaJIT's VM" : "show all " + L[r.all].length + " lines") + "</button>" : "";
  var note = r.note ? "<p>note: " + esc(r.note) + "</p>" : "";
  return '<tr class="stack" data-id="' + r.id + '"><td colspan="8">' + note + "<pre>" + esc(lines.join("\n")) +
    "</pre>" + more + "</td></tr>";
}
function rowHtml(r) {
  var owner = r.owner ? ' <span class="owner">held by ' + r.owner + "</span>" : "";
  return '<tr class="rec' + (open[r.id] ? " open" : "") + '" data-id="' + r.id + '"><td class="num id">' + r.id +
    '</td><td class="kind k-' + r.kind + '">' + r.kind + owner + '</td><td class="num blocks">' + r.blocks +
    '</td><td class="num bytes">' + r.bytes + '</td><td class="num pid">' + (r.pid >= 0 ? r.pid : "") +
    '</td><td class="test">' + esc(r.test) + '</td><td class="lua">' + esc(r.lua) + '</td><td class="top">' +
    esc(r.top) + "</td></tr>" + (open[r.id] ? stackHtml(r, open[r.id] === "all") : "");
}
function renderTable(list) {
  var rows = sorted(list), n = Math.min(state.shown, rows.length), html = [];
  for (var i = 0; i < n; i++) html.push(rowHtml(rows[i]));
  document.querySelector("#records tbody").innerHTML = html.join("");
  var blocks = 0, bytes = 0;
  list.forEach(function (r) { blocks += r.blocks; bytes += r.bytes; });
  var shown = document.getElementById("shown");
  shown.dataset.shown = n;
  shown.dataset.matching = list.length;
  shown.dataset.bytes = bytes;
  shown.textContent = "Showing " + n + " of " + plural(list.length, "record") + " (" + plural(bytes, "byte") +
    " in " + plural(blocks, "block") + ")" + (list.length < R.length ? ", of " + R.length + " in all" : "");
  var more = document.getElementById("more");
  more.hidden = n >= rows.length;
  more.textContent = "Show " + Math.min(PAGE, rows.length - n) + " more";
  document.querySelectorAll("#records th").forEach(function (th) {
    th.className = th.dataset.sort === state.sort ? (state.desc ? "sorted-desc" : "sorted-asc") : "";
  });
}

// -- The flame graph -------------------------------------------------------------------------
// Leaked bytes by stack: the root (every selected record) at the bottom, then the allocation
// functions, the C functions that called them, up through the Lua frames.
function tree(list) {
  var root = {name: -1, value: 0, kids: {}, list: [], lua: false};
  list.forEach(function (r) {
    var node = root, path = L[r.path];
    root.value += r.bytes;
    for (var i = 0; i < path.length; i++) {
      var k = path[i], child = node.kids[k];
      if (!child) {
        child = node.kids[k] = {name: k, value: 0, kids: {}, list: [], lua: i >= r.c};
        node.list.push(child);
      }
      child.value += r.bytes;
      node = child;
    }
  });
  return root;
}
function hue(s) {
  var h = 0;
  for (var i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) % 997;
  return h;
}
function color(node, depth) {
  if (depth === 0) return "#c8c8c8";
  var h = hue(str(node.name));
  if (node.lua) return "hsl(" + (95 + h % 50) + ",55%," + (58 + h % 14) + "%)";
  if (depth === 1) return "hsl(" + (h % 12) + ",80%,62%)";
  return "hsl(" + (18 + h % 30) + ",85%," + (58 + h % 14) + "%)";
}
function renderFlame(list) {
  var box = document.getElementById("flame"), width = Math.max(300, box.clientWidth || 1000);
  var root = tree(list);
  // The zoomed frame: the path asked for, as far as the tree has it.
  var chain = [root], node = root;
  for (var z = 0; z < state.zoom.length && node.kids[state.zoom[z]]; z++) {
    node = node.kids[state.zoom[z]];
    chain.push(node);
  }
  if (chain.length - 1 < state.zoom.length) state.zoom = state.zoom.slice(0, chain.length - 1);
  var top = chain[chain.length - 1], scale = top.value > 0 ? width / top.value : 0;
  var items = [], depthMax = 0;
  function add(n, depth, x, w, path) {
    var name = depth === 0 ? "all" : str(n.name), full = depth === 0 ? "all: " + plural(root.value, "byte") : name;
    var pct = root.value ? (100 * n.value / root.value).toFixed(1) : "0", fit = Math.floor((w - 6) / 6.6);
    var label = w < 24 ? "" : full.length <= fit ? full : full.slice(0, fit - 1) + "\u2026";
    items.push({d: depth, x: x, w: w, name: name, value: n.value, path: path, fill: color(n, depth), pct: pct,
                label: label});
    if (depth > depthMax) depthMax = depth;
  }
  // The frames from the root to the zoomed one, full width.
  var path = [];
  chain.forEach(function (n, d) {
    if (d > 0) path = path.concat([n.name]);
    add(n, d, 0, n.value * scale > 0 ? width : 0, path.join(","));
  });
  (function walk(n, depth, x, prefix) {
    n.list.slice().sort(function (a, b) { return b.value - a.value || a.name - b.name; }).forEach(function (k) {
      var w = k.value * scale, p = prefix ? prefix + "," + k.name : String(k.name);
      if (w >= 1) {
        add(k, depth, x, w, p);
        walk(k, depth + 1, x, p);
      }
      x += w;
    });
  })(top, chain.length, 0, state.zoom.join(","));
  var height = (depthMax + 1) * ROW, out = [];
  out.push('<svg xmlns="http://www.w3.org/2000/svg" width="' + width + '" height="' + height + '" data-total="' +
           root.value + '" data-zoomed="' + top.value + '">');
  items.forEach(function (it) {
    var y = height - (it.d + 1) * ROW;
    out.push('<g class="frame" data-name="' + esc(it.name) + '" data-bytes="' + it.value + '" data-depth="' + it.d +
             '" data-path="' + it.path + '"><title>' + esc(it.name + ": " + plural(it.value, "byte") + " (" + it.pct +
             "%)") + '</title><rect x="' + it.x.toFixed(2) + '" y="' + y + '" width="' + it.w.toFixed(2) +
             '" height="' + (ROW - 1) + '" fill="' + it.fill + '"></rect>' + (it.label ? '<text x="' +
             (it.x + 3).toFixed(2) + '" y="' + (y + ROW - 5) + '">' + esc(it.label) + "</text>" : "") + "</g>");
  });
  out.push("</svg>");
  box.innerHTML = out.join("");
}

// -- Events ----------------------------------------------------------------------------------
function render() {
  var list = selected();
  renderTable(list);
  renderFlame(list);
  document.getElementById("filter").value = state.filter;
  KINDS.forEach(function (k) {
    var box = document.getElementById("kind-" + k);
    if (box) box.checked = !!state.kinds[k];
  });
  document.body.dataset.ready = "1";
}
document.getElementById("filter").addEventListener("input", function (e) {
  state.filter = e.target.value;
  state.shown = PAGE;
  writeHash();
  render();
});
KINDS.forEach(function (k) {
  document.getElementById("kind-" + k).addEventListener("change", function (e) {
    state.kinds[k] = e.target.checked;
    state.shown = PAGE;
    writeHash();
    render();
  });
});
document.querySelector("#records thead").addEventListener("click", function (e) {
  var key = e.target.dataset && e.target.dataset.sort;
  if (!key) return;
  if (state.sort === key) state.desc = !state.desc;
  else { state.sort = key; state.desc = key === "bytes" || key === "blocks"; }
  writeHash();
  renderTable(selected());
});
document.querySelector("#records tbody").addEventListener("click", function (e) {
  var button = e.target.closest("button.frames");
  var tr = e.target.closest("tr");
  if (!tr) return;
  var id = Number(tr.dataset.id);
  if (button) open[id] = open[id] === "all" ? true : "all";
  else if (tr.classList.contains("rec")) open[id] = !open[id];
  else return;
  renderTable(selected());
});
document.getElementById("more").addEventListener("click", function () {
  state.shown += PAGE;
  renderTable(selected());
});
document.getElementById("flame").addEventListener("click", function (e) {
  var g = e.target.closest("g.frame");
  if (!g) return;
  state.zoom = g.dataset.path ? g.dataset.path.split(",").map(Number) : [];
  writeHash();
  renderFlame(selected());
});
window.addEventListener("hashchange", function () { readHash(); render(); });
window.addEventListener("resize", function () { renderFlame(selected()); });
readHash();
render();
})();
]==]

-- Write the page of REPORT into SINK (json.sink). OPTS: show_reachable, fail_on (the kinds shown
-- at first, as the text report lists them).
function M.write(report, opts, sink)
   opts = opts or {}
   local b = sink.b
   local command = text.command_text(value(report.command) or EMPTY, 1000)
   b:put(M.HEAD, "\n<style>", STYLE, "</style></head><body>\n")
   b:put(("<h1>ljleak report</h1>\n<p><code id=\"command\">%s</code>%s &middot; %s engine &middot; ljleak %s</p>\n")
      :format(esc(command), value(report.exit_status) and (" exited with %d"):format(report.exit_status) or "",
      esc(value(report.engine) or "?"), esc(value(report.version) or "?")))
   if value(report.interrupted) then
      b:put(('<p class="interrupted">Interrupted (%s): the report covers only the processes that finished.</p>\n')
         :format(esc(report.interrupted)))
   end
   b:put(verdict_html(report), "<h2>Summary</h2>\n", summary_html(report), processes_html(report), tests_html(report),
         suppressions_html(report), problems_html(report))
   b:put(growthplot.html(report, esc))   -- `ljleak soak`: live bytes and RSS per iteration
   b:put('<h2>Flame graph</h2>\n<p class="hint">Leaked bytes by stack, from the allocation function (bottom) up '
      .. "through the C functions that called it and the Lua frames. Width is bytes; click a frame to zoom, the "
      .. 'bottom one to zoom out. It shows the records the table selects.</p>\n<div id="flame"></div>\n')
   b:put('<h2>Records</h2>\n<div id="controls"><input type="search" id="filter" placeholder="Filter: a function, '
      .. 'a file, a test, a pid...">')
   for _, k in ipairs(model.KINDS) do
      b:put(('<label class="k-%s"><input type="checkbox" id="kind-%s"> %s</label>'):format(k, k, k))
   end
   b:put('</div>\n<p id="shown"></p>\n<table id="records"><thead><tr><th data-sort="id">#</th>'
      .. '<th data-sort="kind">kind</th><th data-sort="blocks">blocks</th><th data-sort="bytes">bytes</th>'
      .. '<th data-sort="pid">pid</th><th data-sort="test">test</th><th data-sort="lua">Lua line</th>'
      .. '<th data-sort="top">top C frame</th></tr></thead><tbody></tbody></table>\n'
      .. '<button id="more" hidden>Show more</button>\n')
   b:put(errors_html(report), "<noscript><p>The records and the flame graph are drawn by this page's script: allow "
      .. "it to see them.</p></noscript>\n")
   b:put('<script type="application/json" id="ljleak-data">')
   json.drain(sink)
   put_data(page_data(report, opts), sink)
   b = sink.b
   b:put("</script>\n<script>", SCRIPT, "</script>\n</body></html>\n")
end

return M
