"""Browser tests: Playwright drives Debian's Chromium against live_server and the fake Graph server.

`playwright install` never runs here: the launch fixture points at /usr/bin/chromium
(docs/toolchain.md). Screenshots go to $SCREENSHOT_DIR (default artifacts/screenshots).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

# Playwright's event loop vs Django's ORM in live_server fixtures: tests only.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

SCREENSHOT_DIR = Path(
    os.environ.get("SCREENSHOT_DIR") or Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
)


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args):
    return {
        **browser_type_launch_args,
        "executable_path": shutil.which("chromium") or "/usr/bin/chromium",
        "args": [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
        ],
    }


@pytest.fixture(scope="session")
def browser(live_server, browser):
    """pytest-playwright's Chromium, started after the live server so that it is closed first.

    Chromium keeps its connections to the live server open between pages. The server's
    request threads end only when Chromium closes them, and on in-memory SQLite each one
    then closes the database connection it borrowed from the test thread, which Django
    allows only while the live server runs (17 unhandled-thread warnings when it did not).
    """
    return browser


@pytest.fixture
def browser_context_args(browser_context_args):
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}, "locale": "en-US"}


@pytest.fixture
def shot():
    """`shot(page, "name")` saves a full-page PNG into SCREENSHOT_DIR and returns its path."""
    SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SCREENSHOT_DIR / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


class FakeControl:
    """The fake Graph server's control API over real HTTP."""

    def __init__(self, control_url: str) -> None:
        self.url = control_url

    def call(self, method: str, path: str, body: dict | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310  (a local test server)
            f"{self.url}{path}", data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return json.loads(response.read() or b"null")


@pytest.fixture
def fake_graph(settings):
    from devtools.fake_graph import FakeGraphServer

    server = FakeGraphServer(port=0)
    server.start()
    settings.META_GRAPH_URL = server.base_url
    # Polling asks Meta at most once a second here, so the test does not wait long.
    settings.WHATSAPP_STATUS_REFRESH_SECONDS = 1
    try:
        yield server, FakeControl(server.control_url)
    finally:
        server.stop()


# The demo clinic's WABA and access token, as scripts/run gives them to the simulated Meta.
DEMO_WABA = "102290129340398"
DEMO_TOKEN = "EAADEMOsimulatedACCESStokenFORtheDEMOclinic0001"


@pytest.fixture
def simulated(settings, fake_graph):
    """Meta simulated with the demo numbers, as scripts/run starts it."""
    from devtools.fake_graph import seed_demo

    server, control = fake_graph
    seed_demo(server.graph, DEMO_WABA)
    settings.META_SIMULATED = True
    return control
