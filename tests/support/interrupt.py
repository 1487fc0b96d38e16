"""Interrupting dtbundle mid-transfer: a throttling TCP proxy in front of a registry (so a transfer
lasts seconds, not milliseconds), and a dtbundle process whose stderr is read line by line while
it runs (so a test can signal it once its progress shows it is under way)."""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from types import TracebackType

from tests.support.cli import cli_env


class ThrottledProxy:
    """Forwards TCP connections from a free 127.0.0.1 port to ``upstream`` (``host:port``), each
    direction of each connection at most ``rate`` bytes per second. A context manager.
    ``served`` counts the bytes the upstream sent to clients (headers included)."""

    def __init__(self, upstream: str, rate: int) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream, self.rate = (host, int(port)), rate
        self.served = 0
        self._count = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.sockets: list[socket.socket] = [self.listener]
        threading.Thread(target=self._accept, name="throttle-accept", daemon=True).start()

    def __enter__(self) -> ThrottledProxy:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
                server = socket.create_connection(self.upstream)
            except OSError:
                return
            self.sockets += [client, server]
            for source, sink, counted in ((client, server, False), (server, client, True)):
                threading.Thread(target=self._pump, args=(source, sink, counted), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(64 * 1024):
                sink.sendall(data)
                if counted:
                    with self._count:
                        self.served += len(data)
                time.sleep(len(data) / self.rate)
            sink.shutdown(socket.SHUT_WR)
        except OSError:
            with contextlib.suppress(OSError):
                sink.close()


class Watched:
    """``python -m dtbundle ARGS`` running in the background, its stderr collected line by line."""

    def __init__(self, *args: str, env: Mapping[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dtbundle", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=cli_env(env),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, seen: Callable[[str], bool], timeout: float = 30) -> str:
        """The first stderr line for which ``seen`` is true; fails if the process ends first or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((line for line in list(self.lines) if seen(line)), None)
            if found is not None:
                return found
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        raise AssertionError(f"no such line (exit {self.proc.poll()}): {self.lines}")

    def interrupt(self, number: signal.Signals) -> tuple[int, list[str]]:
        """Send signal ``number``; return the exit code and every stderr line."""
        self.proc.send_signal(number)
        try:
            code = self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
        self._reader.join(timeout=10)
        return code, self.lines
