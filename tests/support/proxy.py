"""A real HTTP proxy for tests: Debian's tinyproxy on a free 127.0.0.1 port, in the foreground.

Its own config file lives in a temporary directory; the log (LogLevel Connect: one line per
client connection and one per request line, ``CONNECT host:port`` or ``GET http://…``) is what
tests read to see that traffic went through it. There is no ``ConnectPort`` line: tinyproxy
then allows CONNECT to every port (Debian's stock config allows only 443 and 563), which the
test registries on random ports need.
"""

from __future__ import annotations

import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from dtbundle.sandbox.lifecycle import stop_process
from dtbundle.sandbox.pki import KeyPair, issue
from dtbundle.sandbox.registry_server import free_port


@dataclass
class TinyProxy:
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    credentials: tuple[str, str] | None = None

    @property
    def log_path(self) -> Path:
        return self.workdir / "tinyproxy.log"

    def url(self, user: str | None = None, password: str | None = None) -> str:
        """``http://127.0.0.1:PORT``, with ``user:password@`` when given (else the configured ones)."""
        user, password = (user, password) if user is not None else (self.credentials or (None, None))
        auth = f"{user}:{password}@" if user is not None else ""
        return f"http://{auth}127.0.0.1:{self.port}"

    def mark(self) -> int:
        """The log's current length: pass it to :meth:`requests_since`."""
        return self.log_path.stat().st_size

    def lines_since(self, mark: int) -> list[str]:
        with self.log_path.open("rb") as log:
            log.seek(mark)
            return log.read().decode("utf-8", "replace").splitlines()

    def requests_since(self, mark: int) -> list[str]:
        """The request lines the proxy received since ``mark``, e.g. ``CONNECT 127.0.0.1:5000 HTTP/1.1``."""
        return [line.split("): ", 1)[1] for line in self.lines_since(mark) if "]: Request (file descriptor" in line]

    def stop(self) -> None:
        stop_process(self.process)


def tinyproxy_binary() -> str:
    path = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if Path("/usr/bin/tinyproxy").exists() else None)
    if path is None:
        raise RuntimeError("tinyproxy is not installed: run ./scripts/setup.sh, which installs it")
    return path


def start_tinyproxy(workdir: Path, credentials: tuple[str, str] | None = None) -> TinyProxy:
    """Start tinyproxy (``BasicAuth`` with ``credentials`` when given) and wait until it accepts connections."""
    port = free_port()
    log = workdir / "tinyproxy.log"
    log.touch()
    lines = [
        "Listen 127.0.0.1",
        f"Port {port}",
        f'LogFile "{log}"',
        "LogLevel Connect",
        "Allow 127.0.0.1",
        "MaxClients 64",
        "Timeout 60",
        f'PidFile "{workdir / "tinyproxy.pid"}"',
    ]
    if credentials is not None:
        lines.append(f"BasicAuth {credentials[0]} {credentials[1]}")
    config = workdir / "tinyproxy.conf"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    process = subprocess.Popen(
        [tinyproxy_binary(), "-d", "-c", str(config)],
        stdout=(workdir / "tinyproxy.out").open("wb"),
        stderr=subprocess.STDOUT,
    )
    proxy = TinyProxy(port, workdir, process, credentials)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            output = (workdir / "tinyproxy.out").read_text(errors="replace")
            raise RuntimeError(f"tinyproxy exited with {process.returncode}: {output[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proxy
        except OSError:
            time.sleep(0.05)
    proxy.stop()
    raise RuntimeError(f"tinyproxy did not listen on 127.0.0.1:{port} within 10 s")


class TlsFront:
    """TLS in front of a plain proxy, which makes it an ``https://`` proxy: each connection's
    TLS (a certificate of ``ca`` for 127.0.0.1) is terminated here and its bytes relayed to
    ``127.0.0.1:upstream``, one thread per connection."""

    def __init__(self, ca: KeyPair, upstream: int, workdir: Path) -> None:
        cert, key = issue(ca, "127.0.0.1").write(workdir, "https-proxy")
        self._context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._context.load_cert_chain(cert, key)
        self._upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self._listener.getsockname()[1])
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # stopped
            self.connections += 1
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn: socket.socket) -> None:
        try:
            with (
                self._context.wrap_socket(conn, server_side=True) as front,
                socket.create_connection(("127.0.0.1", self._upstream)) as back,
            ):
                while True:  # one thread per connection: an SSL socket is not shared between threads
                    ready = [front] if front.pending() else select.select([front, back], [], [], 30)[0]
                    if not ready:
                        return
                    for source in ready:
                        data = source.recv(65536)
                        if not data:
                            return
                        (back if source is front else front).sendall(data)
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self._listener.close()
