"""Development set-up for scripts/run: complete a partial `.env`, read a setting, pick a port.

    python -m devtools.dev_env complete .env        # add what is missing, never change a line
    python -m devtools.dev_env get .env NAME        # the OS environment, else .env, else ""
    python -m devtools.dev_env port 8765            # 8765 if free on 127.0.0.1, else a free one

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


def port(preferred: int) -> int:
    for candidate in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise RuntimeError("no free port on 127.0.0.1")


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "complete":
        added = complete(Path(argv[1]))
        if added:
            print(f"==> .env: added {', '.join(added)}")  # noqa: T201 - a command-line tool
        return 0
    if len(argv) == 3 and argv[0] == "get":
        print(get(Path(argv[1]), argv[2]))  # noqa: T201
        return 0
    if len(argv) == 2 and argv[0] == "port":
        print(port(int(argv[1])))  # noqa: T201
        return 0
    print(__doc__, file=sys.stderr)  # noqa: T201
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
