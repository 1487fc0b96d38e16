"""scripts/bench.py works: the delaying proxy behaves as its model says, and ``suite`` runs end to end.

Shape and consistency only: speed is measured with the benchmark script, never asserted here.
The one time bound below is the proxy's own behaviour (a turn through it costs at least the
round trip it adds), not a speed requirement of dtbundle.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _proxy_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_proxy", SCRIPTS / "benchlib" / "proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Echo(BaseHTTPRequestHandler):
    """GET answers ``ok``; POST answers the sha256 of its body."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self._answer(b"ok")

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self._answer(hashlib.sha256(body).hexdigest().encode())

    def _answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_the_proxy_adds_a_round_trip_per_turn_and_one_per_connection(upstream: str) -> None:
    rtt_ms = 60
    proxy = _proxy_module().DelayProxy(upstream, rtt_ms).start()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", proxy.port, timeout=30)
        start = time.perf_counter()
        for _ in range(3):
            connection.request("GET", "/")
            assert connection.getresponse().read() == b"ok"
        elapsed = time.perf_counter() - start
        body = bytes(range(256)) * 8192  # 2 MiB, forwarded byte for byte
        connection.request("POST", "/", body=body)
        assert connection.getresponse().read() == hashlib.sha256(body).hexdigest().encode()
        connection.close()
    finally:
        proxy.stop()
    # the TCP handshake, then three request/response turns on the same connection
    assert elapsed >= 4 * rtt_ms / 1000
    assert (proxy.connections, proxy.turns) == (1, 4)


def test_the_suite_runs_every_tool_and_reports_medians_and_ratios(tmp_path: Path, skopeo: str) -> None:
    out = tmp_path / "results"
    done = subprocess.run(
        [
            *(sys.executable, str(SCRIPTS / "bench.py"), "suite", "--sets", "latency", "--rounds", "1"),
            *("--latency-ms", "5", "--small", "--floor-jobs", "1,2", "--workdir", str(tmp_path), "--out", str(out)),
        ],
        capture_output=True,
        text=True,
        timeout=110,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "suite.json").read_text())
    assert report["rounds"] == 1 and report["latency_ms"] == 5
    result = report["sets"]["latency"]
    assert result["latency_ms"] == 5 and result["images"] == 2 and result["artifacts"] > 0
    assert set(result["export"]) == {"dtbundle", "skopeo", "floor"}
    assert set(result["import"]) == {"dtbundle", "skopeo", "floor-j1", "floor-j2"}
    for phase in ("export", "import"):
        for summary in result[phase].values():
            assert len(summary["runs"]) == 1
            assert summary["median_s"] > 0 and summary["peak_rss_mib"] > 0
            assert summary["turns_median"] > 0 and summary["connections_median"] > 0  # all through the proxy
        skopeo_parts = result[phase]["skopeo"]["parts_median_s"]
        assert sum(skopeo_parts.values()) == pytest.approx(result[phase]["skopeo"]["median_s"], abs=0.01)
    ratios = result["ratios"]
    assert ratios["export"]["dtbundle/skopeo"] == pytest.approx(
        result["export"]["dtbundle"]["median_s"] / result["export"]["skopeo"]["median_s"], rel=0.01
    )
    assert set(ratios["import"]) == {"dtbundle/skopeo", "dtbundle/floor-j1", "dtbundle/floor-j2", "dtbundle/best floor"}
    assert set(result["targets_met"]) == {"export", "import", "rss"}
    table = (out / "suite.md").read_text()
    assert table in done.stdout
    assert "| set | export (dtbundle / skopeo) | import (dtbundle / skopeo) |" in table
    assert "5 ms per request" in table
