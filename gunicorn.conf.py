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

# Whoever turns the access log on (`--access-logfile -`, as the README does) gets
# this shape: the common log format minus the secrets above, plus the time taken.
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(B)s %(M)sms "%(a)s"'

# A worker that has not answered in this many seconds is killed and replaced. nginx
# in front (deploy/nginx.conf) buffers slow clients, so a worker only waits on us.
timeout = 60
