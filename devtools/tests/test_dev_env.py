"""scripts/run's helpers: the simulated Meta keeps its port across a quick restart, a busy PORT stops it."""

from __future__ import annotations

import socket
import urllib.request

from devtools import dev_env
from devtools.fake_graph import FakeGraphServer


def _stop_after_serving_one_request() -> int:
    """A fake that answered a request and stopped: its port holds a connection in TIME_WAIT."""
    with FakeGraphServer() as server:
        # The server closes the connection first (HTTP/1.0), so the TIME_WAIT is on its port.
        with urllib.request.urlopen(f"{server.control_url}/settings", timeout=10) as answer:  # noqa: S310
            assert answer.status == 200
        return server.port


def test_it_keeps_the_simulated_metas_port_across_a_quick_restart():
    port = _stop_after_serving_one_request()

    assert dev_env.port(port) == port
    with FakeGraphServer(port=port) as again:
        assert again.port == port


def test_it_picks_another_port_when_someone_listens_on_the_preferred_one():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]

        chosen = dev_env.port(busy)

    assert chosen != busy
    assert chosen > 0


def test_the_simulated_meta_never_takes_the_web_servers_port():
    port = _stop_after_serving_one_request()

    assert dev_env.port(port, avoid=port) != port


def test_a_busy_port_is_one_clear_sentence(capsys):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]

        assert dev_env.main(["free", "127.0.0.1", str(busy)]) == 1

    error = capsys.readouterr().err.strip()
    assert error == (
        f"Port {busy} on 127.0.0.1 is already in use (another server is running there?): "
        f"stop it, or choose another port, e.g. PORT={busy + 1} scripts/run."
    )
    assert error.count("\n") == 0


def test_a_free_port_says_nothing(capsys):
    port = _stop_after_serving_one_request()

    assert dev_env.main(["free", "127.0.0.1", str(port)]) == 0
    assert capsys.readouterr() == ("", "")
