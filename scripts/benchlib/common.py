"""Measuring a child process (wall time, peak RSS), random content, and the children's environment."""

from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

MiB = 1024 * 1024

# Proxy and cache settings that would change what a measured child does; they never reach it.
_DROPPED_ENV = {
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "no_proxy",
    "dtbundle_cache_dir",
}


def child_env(**extra: str) -> dict[str, str]:
    """Our environment without proxy variables and DTBUNDLE_CACHE_DIR, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k.lower() not in _DROPPED_ENV}
    env.update(extra)
    return env


def vm_hwm_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def measured(cmd: list[str], env: dict[str, str] | None = None, quiet: bool = False) -> tuple[float, int]:
    """Run ``cmd``; return (wall seconds, peak RSS in KiB).

    Peak RSS is the child's own VmHWM, sampled every 10 ms: getrusage's ru_maxrss of a
    child starts at the parent's RSS at fork time on Linux, which would hide small peaks.
    """
    return measured_pipeline([cmd], env, quiet)


def measured_pipeline(
    cmds: list[list[str]], env: dict[str, str] | None = None, quiet: bool = False
) -> tuple[float, int]:
    """Run ``cmds`` as a shell pipeline would (each one's stdout into the next one's stdin).

    Peak RSS is the sum of each process's own peak (they run at the same time).
    """
    start = time.perf_counter()
    procs: list[subprocess.Popen[bytes]] = []
    for n, cmd in enumerate(cmds):
        last = n == len(cmds) - 1
        procs.append(
            subprocess.Popen(
                cmd,
                stdin=procs[-1].stdout if procs else subprocess.DEVNULL,
                stdout=(subprocess.DEVNULL if quiet else None) if last else subprocess.PIPE,
                env=env,
            )
        )
        if len(procs) > 1 and procs[-2].stdout is not None:
            procs[-2].stdout.close()  # the next process holds it now
    peaks = [0] * len(procs)
    while any(p.poll() is None for p in procs):
        for n, proc in enumerate(procs):
            if proc.returncode is None:
                peaks[n] = max(peaks[n], vm_hwm_kib(proc.pid))
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    failed = [cmd for cmd, proc in zip(cmds, procs, strict=True) if proc.returncode != 0]
    if failed:
        raise SystemExit(f"benchmark step failed: {' | '.join(' '.join(c) for c in failed)}")
    return elapsed, sum(peaks)


SKOPEO_COPY = ["skopeo", "copy", "--quiet", "--all", "--preserve-digests"]


def skopeo_copies(
    pairs: list[tuple[str, str]], tls_option: str, env: dict[str, str] | None = None
) -> tuple[float, int]:
    """``skopeo copy --all`` of each (source, destination), one at a time as users run it: the seconds
    summed, the largest peak RSS (KiB). ``tls_option``: ``--src-tls-verify=false`` or ``--dest-…``."""
    seconds, peak = 0.0, 0
    for source, destination in pairs:
        secs, rss = measured([*SKOPEO_COPY, tls_option, source, destination], env)
        seconds, peak = seconds + secs, max(peak, rss)
    return seconds, peak


def write_random(path: Path, size: int) -> str:
    """Write ``size`` random (incompressible, like gzip layers) bytes; return their digest."""
    digest = hashlib.sha256()
    with path.open("wb") as handle:
        left = size
        while left:
            chunk = os.urandom(min(16 * MiB, left))
            digest.update(chunk)
            handle.write(chunk)
            left -= len(chunk)
    return "sha256:" + digest.hexdigest()


def bundle_content(bundle: Path) -> int:
    """The content bytes a dtbundle bundle carries (its catalog's totalSize)."""
    from dtbundle.bundle.reader import open_bundle

    with open_bundle(bundle, None) as reader:
        return int(reader.catalog.total_size)
