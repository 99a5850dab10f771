"""Count SQL at the database's door: a TCP relay in front of PostgreSQL that reads the client's messages.

Counting inside Django (CaptureQueriesContext) misses what Django sends on its own,
such as the `SELECT 1` of CONN_HEALTH_CHECKS, and cannot tell a prepared statement
from a parsed one. The relay sees every message the server sees. In PostgreSQL's
frontend protocol a statement runs either as a simple query ('Q') or as an extended
query's Execute ('E'). The server parses and plans the SQL text of every simple
query and of every Parse ('P'); a prepared statement runs with Bind and Execute alone. BEGIN and COMMIT count: the server runs them too.

The relay needs an unencrypted stream: the database URL it serves says sslmode=disable.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections import Counter

SSL_REQUEST = 80877103
GSSENC_REQUEST = 80877104


class WireCounter:
    """Relays 127.0.0.1:<port> to the PostgreSQL server, counting the client's messages."""

    def __init__(self, server_host: str, server_port: int) -> None:
        self.server = (server_host, server_port)
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = int(self._listener.getsockname()[1])
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            # A simple query is always parsed and planned; an extended one only when it comes with a Parse.
            return {
                "statements": self.counts["Q"] + self.counts["E"],
                "parses": self.counts["Q"] + self.counts["P"],
            }

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.server)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._client_to_server, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            _shut(source, sink)

    def _client_to_server(self, client: socket.socket, upstream: socket.socket) -> None:
        buffer = b""
        started = False  # before the StartupMessage, messages carry no type byte
        try:
            while data := client.recv(65536):
                upstream.sendall(data)
                buffer += data
                while True:
                    if not started:
                        if len(buffer) < 8:
                            break
                        length, code = struct.unpack("!ii", buffer[:8])
                        if len(buffer) < length:
                            break
                        buffer = buffer[length:]
                        started = code not in (SSL_REQUEST, GSSENC_REQUEST)
                        continue
                    if len(buffer) < 5:
                        break
                    kind = chr(buffer[0])
                    (length,) = struct.unpack("!i", buffer[1:5])
                    if len(buffer) < 1 + length:
                        break
                    buffer = buffer[1 + length :]
                    if kind in "QEP":
                        with self._lock:
                            self.counts[kind] += 1
        except OSError:
            pass
        finally:
            _shut(client, upstream)


def _shut(*sockets: socket.socket) -> None:
    """End both directions of a relayed connection (either side may already be gone)."""
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
