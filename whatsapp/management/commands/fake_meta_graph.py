"""Run the fake Graph API server in the foreground: ``manage.py fake_meta_graph --port 8765``."""

from __future__ import annotations

import signal
from types import FrameType
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from whatsapp.fake_graph import DEFAULT_API_VERSION, FakeGraphServer


class Command(BaseCommand):
    help = (
        "Serve a stateful fake of Meta's Graph API for offline development and end-to-end tests. "
        "Point META_GRAPH_URL at the printed base URL; the control API is documented in "
        "whatsapp/fake_graph.py. Stop with Ctrl-C or SIGTERM."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--port", type=int, default=8765, help="TCP port (0 picks a free one). Default 8765."
        )
        # Loopback by default: the fake keeps OTP codes and PINs in clear text.
        parser.add_argument("--host", default="127.0.0.1", help="Interface to bind. Default 127.0.0.1.")
        parser.add_argument(
            "--api-version",
            default=DEFAULT_API_VERSION,
            help="Version in the printed base URL (any vNN.0 works).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        server = FakeGraphServer(options["host"], options["port"], api_version=options["api_version"])

        def stop(signum: int, frame: FrameType | None) -> None:
            # serve_forever() only leaves its loop on an exception in this thread.
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, stop)
        self.stdout.write(server.base_url)
        self.stdout.write(f"control API: {server.control_url}/state")
        self.stdout.flush()
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            self.stdout.write("fake Graph server stopped")
