"""Development set-up for scripts/run: complete a partial `.env`, read a setting, pick a port.

    python -m devtools.dev_env complete .env        # add what is missing, never change a line
    python -m devtools.dev_env get .env NAME        # the OS environment, else .env, else ""
    python -m devtools.dev_env port 8765 [8000]     # 8765 if free on 127.0.0.1 (and not 8000), else a free one
    python -m devtools.dev_env free 127.0.0.1 8000  # exit 1 with one sentence when nothing can listen there

A `.env` a developer wrote by hand (`META_GRAPH_URL=...` only, say) gets the
development values it lacks appended, so the first run can never fail for a
missing SECRET_KEY, and the demo passwords stay the same across restarts.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
from pathlib import Path

from common.crypto import generate_key_line


def _values(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    if not path.exists():
        return values
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, value = line.partition("=")
        values[name.strip().removeprefix("export ").strip()] = value.strip().strip("'\"")
    return values


def complete(path: Path) -> list[str]:
    """Append the development values `.env` lacks; returns the names added."""
    present = _values(path)
    defaults = {
        "DEBUG": lambda: "true",
        "SECRET_KEY": lambda: "dev-" + secrets.token_urlsafe(40),
        "FIELD_ENCRYPTION_KEYS": lambda: generate_key_line("dev1"),
        # Kept here so the demo logins survive restarts (development only).
        "DEMO_PASSWORD": lambda: secrets.token_urlsafe(12),
        "DEMO_SUPERUSER_PASSWORD": lambda: secrets.token_urlsafe(12),
    }
    missing = [name for name in defaults if name not in present and name not in os.environ]
    if missing:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        lines = [] if not text or text.endswith("\n") else [""]
        if not text:
            lines.append("# Development settings written by scripts/run; add your own below.")
        lines += [f"{name}={defaults[name]()}" for name in missing]
        with path.open("a", encoding="utf-8") as env_file:
            env_file.write("\n".join(lines) + "\n")
    return missing


def get(path: Path, name: str) -> str:
    return os.environ.get(name) or _values(path).get(name, "")


def _bindable(host: str, candidate: int) -> int | None:
    """The port a listener could bind on `host` now, or None when another one holds it.

    SO_REUSEADDR, as the fake server and Django's development server set it: a port whose
    last server stopped a moment ago (its connections in TIME_WAIT) is free for the next one,
    so a quick restart keeps its port; a port someone listens on is still refused.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, candidate))
        except OSError:
            return None
        return int(sock.getsockname()[1])


def port(preferred: int, *, avoid: int | None = None) -> int:
    """`preferred` if free on 127.0.0.1 and not `avoid` (the web server's port), else a free one."""
    for candidate in (preferred, 0):
        if candidate and candidate == avoid:
            continue
        found = _bindable("127.0.0.1", candidate)
        if found is not None:
            return found
    raise RuntimeError("no free port on 127.0.0.1")


def port_in_use(host: str, candidate: int) -> str | None:
    """One sentence saying why the server cannot listen on host:port, or None if it can."""
    if _bindable(host, candidate) is None:
        return (
            f"Port {candidate} on {host} is already in use (another server is running there?): "
            f"stop it, or choose another port, e.g. PORT={candidate + 1} scripts/run."
        )
    return None


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "complete":
        added = complete(Path(argv[1]))
        if added:
            print(f"==> .env: added {', '.join(added)}")  # noqa: T201 - a command-line tool
        return 0
    if len(argv) == 3 and argv[0] == "get":
        print(get(Path(argv[1]), argv[2]))  # noqa: T201
        return 0
    if len(argv) in (2, 3) and argv[0] == "port":
        print(port(int(argv[1]), avoid=int(argv[2]) if len(argv) == 3 else None))  # noqa: T201
        return 0
    if len(argv) == 3 and argv[0] == "free":
        problem = port_in_use(argv[1], int(argv[2]))
        if problem:
            print(problem, file=sys.stderr)  # noqa: T201
            return 1
        return 0
    print(__doc__, file=sys.stderr)  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
