"""wrk Lua scripts: one per endpoint, each printing one JSON line from done()."""

from __future__ import annotations

import json
from pathlib import Path

DONE = r"""
done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean, latency.max))
end
"""

THREAD_IDS = r"""
local counter = 0
local offset = 0
init = function(args)
  -- `wrk ... -- <offset>`: where this slice starts, so slices never replay each other's bodies
  offset = tonumber(args[1] or "0") or 0
end
local threads = {}
local next_id = 0
setup = function(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end
"""


def _lua_string(text: str) -> str:
    return json.dumps(text)  # a JSON string literal is a valid Lua string for ASCII input


def get_script(path: str, headers: dict[str, str]) -> str:
    lines = ['wrk.method = "GET"', f"wrk.path = {_lua_string(path)}"]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n" + DONE


def patch_settings_script(path: str, headers: dict[str, str]) -> str:
    """PATCH with a value unique per request (thread id + counter): every write really writes."""
    hdrs = ", ".join(f"[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    return (
        THREAD_IDS
        + f"""
local headers = {{ {hdrs}, ["Content-Type"] = "application/json" }}
request = function()
  counter = counter + 1
  local body = '{{"city": "Bench ' .. tostring(offset) .. '-' .. tostring(tid) .. '-' .. tostring(counter) .. '", "bot_enabled": ' .. ((counter % 2 == 0) and "true" or "false") .. '}}'
  return wrk.format("PATCH", {_lua_string(path)}, headers, body)
end
"""
        + DONE
    )


def webhook_script(path: str, bodies: list[tuple[str, str]], threads: int) -> str:
    """Cycles through pre-signed bodies (each with its own message id); threads take disjoint slots."""
    entries = ",\n".join(f"{{[==[{body}]==], {_lua_string(sig)}}}" for body, sig in bodies)
    return (
        THREAD_IDS
        + f"""
local bodies = {{
{entries}
}}
local n = #bodies
local nthreads = {threads}
request = function()
  local i = (offset + counter * nthreads + tid) % n + 1
  counter = counter + 1
  local item = bodies[i]
  return wrk.format("POST", {_lua_string(path)}, {{["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = item[2]}}, item[1])
end
"""
        + DONE
    )


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / f"{name}.lua"
    path.write_text(text)
    return path
