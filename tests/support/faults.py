"""A fault-injecting reverse proxy on 127.0.0.1, in front of a real test registry.

dtbundle talks to the proxy as if it were the registry (``--plain-http``); the proxy forwards
each request to the registry unchanged (``Host`` included, so the registry's upload
``Location`` URLs name the proxy and uploads stay behind it) and answers with the registry's
response — unless a :class:`Fault` of its script matches the request (method and a regular
expression searched in the path), in which case it misbehaves ``times`` times (None: always):

``reset``     a GET with a body: forward, send the headers and half the body, then reset the
              connection (RST); any other request: read it, reset without forwarding it.
``truncate``  like ``reset``, but an orderly close: the body ends short of its Content-Length.
``stall``     a GET with a body: forward, send the headers and half the body, then send nothing
              for ``seconds`` and close; any other request: send nothing for ``seconds`` (no
              headers either), close, and never forward it.
``status``    answer ``status`` (503, 429, …) without forwarding, with ``Retry-After`` if given.

``fired`` records (method, path, kind) of every fault injected; ``requests`` every request seen.
Only loopback is involved: the proxy binds 127.0.0.1 and forwards to the registry's address.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal

FaultKind = Literal["reset", "truncate", "stall", "status"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-authorization", "proxy-connection", "te"}


@dataclass
class Fault:
    kind: FaultKind
    method: str = "GET"
    path: str = "/blobs/sha256:"  # regular expression, searched in the request path
    times: int | None = 1  # how often it fires; None: every time
    status: int = 503
    retry_after: str | None = None
    seconds: float = 1.0  # how long a stall lasts

    def matches(self, method: str, path: str) -> bool:
        return method == self.method and re.search(self.path, path) is not None and self.times != 0


class FaultProxy:
    """The running proxy: ``address`` goes into image references in place of the registry's."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.script: list[Fault] = []
        self.fired: list[tuple[str, str, str]] = []
        self.requests: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.daemon_threads = True
        self._server.proxy = self  # type: ignore[attr-defined]
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="fault-proxy", daemon=True
        )
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self._server.server_address[1]}"

    def inject(self, *faults: Fault) -> None:
        """Replace the script (and forget what fired)."""
        with self._lock:
            self.script = list(faults)
            self.fired.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The fault for this request, if any (counted as fired)."""
        with self._lock:
            self.requests.append((method, path))
            for fault in self.script:
                if fault.matches(method, path):
                    if fault.times is not None:
                        fault.times -= 1
                    self.fired.append((method, path, fault.kind))
                    return fault
        return None

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._relay()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _relay(self) -> None:
        proxy: FaultProxy = self.server.proxy  # type: ignore[attr-defined]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fault = proxy.take(self.command, self.path)
        if fault is not None and fault.kind == "status":
            self.send_response(fault.status)
            if fault.retry_after is not None:
                self.send_header("Retry-After", fault.retry_after)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        cut_body = fault is not None and self.command == "GET"
        if fault is not None and not cut_body:
            self._fail(fault.kind, fault.seconds)
            return
        status, reason, headers, data = self._forward(proxy.upstream, body)
        if cut_body and fault is not None and len(data) > 1:
            self._send_head(status, reason, headers, len(data))
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self._fail(fault.kind, fault.seconds)
            return
        self._send_head(status, reason, headers, None if self.command == "HEAD" else len(data))
        if self.command != "HEAD":
            self.wfile.write(data)

    def _forward(self, upstream: str, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        host, port = upstream.rsplit(":", 1)
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            connection.request(
                self.command, self.path, body=body if body or length_given(headers) else None, headers=headers
            )
            response = connection.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in HOP_BY_HOP]
            return response.status, response.reason, kept, data
        finally:
            connection.close()

    def _send_head(self, status: int, reason: str, headers: list[tuple[str, str]], length: int | None) -> None:
        self.send_response(status, reason)
        for name, value in headers:
            if length is None or name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", str(length))
        self.end_headers()

    def _fail(self, kind: FaultKind, seconds: float) -> None:
        if kind == "stall":
            time.sleep(seconds)
        self.close_connection = True
        if kind == "reset":  # SO_LINGER 0: close sends RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            return
        self.wfile.flush()
        self.connection.shutdown(socket.SHUT_RDWR)


def length_given(headers: dict[str, str]) -> bool:
    return any(k.lower() == "content-length" for k in headers)
