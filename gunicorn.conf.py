"""gunicorn's settings, kept with the code: gunicorn reads ./gunicorn.conf.py from the working directory.

So every way of starting it from the project root (the README's command, the
benchmark, the end-to-end tests, a process manager) gets them. Flags given on
the command line still win over this file.

The one rule here that must never be undone: the access log holds no secret.
Meta's webhook handshake carries the verify token in the query string
(`?hub.verify_token=...`), and API clients send `Authorization`. So the format
logs the path without its query (`%(U)s`), never the request line (`%(r)s`,
which has the query) or the query (`%(q)s`), no request headers, no referer (a
URL with a query of its own), and no `%(u)s` (the user name gunicorn decodes
from a Basic `Authorization` header).
"""

from __future__ import annotations

import os
import re
from typing import Any

# Whoever turns the access log on (`--access-logfile -`, as the README does) gets
# this shape: the common log format minus the secrets above, plus the time taken.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

# A worker that has not answered in this many seconds is killed and replaced. nginx
# in front (deploy/nginx.conf) buffers slow clients, so a worker only waits on us.
timeout = 60


def control_socket_of(bind: list[str], default: str) -> str:
    """A control socket of this instance's own, named after its first listening address.

    gunicorn's default path is one per user (`$XDG_RUNTIME_DIR/gunicorn.ctl`): a second
    instance (the README runs two side by side) replaced the first one's socket, and the
    first to stop deleted it, leaving `gunicornc` nothing or the wrong server. Two
    instances cannot listen on the same address, so the address names the socket:
    `gunicornc -s $XDG_RUNTIME_DIR/gunicorn-127.0.0.1-8000.ctl` reaches the one on 8000.
    """
    listening = re.sub(r"[^A-Za-z0-9._-]+", "-", bind[0] if bind else "default").strip("-")
    return os.path.join(os.path.dirname(default), f"gunicorn-{listening}.ctl")


def on_starting(server: Any) -> None:
    """Give this instance its own control socket, unless one was named (`--control-socket`)."""
    setting = server.cfg.settings["control_socket"]
    if setting.value == setting.default:
        server.cfg.set("control_socket", control_socket_of(list(server.cfg.bind), setting.default))
    server.log.info("Control socket: %s", server.cfg.control_socket)
