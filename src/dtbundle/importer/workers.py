"""The import's concurrency: requests side by side (:func:`run_all`), existence checks batched up
front (:func:`probe`), and the blob upload pool (:class:`UploadPool`).

Threads are daemons that take no work once a run stopped (an error, Ctrl-C): a request in flight
ends on its own bounds, and an upload's body stops at its next piece (its :class:`Spool` fails).
Only blobs are ever uploaded here; manifests and tags are written by the publisher, after the
bundle verified, one level (or one wave of tags) at a time through :func:`run_all`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from dtbundle.importer.plan import ImportPlan
from dtbundle.importer.spool import Spool
from dtbundle.limits import IMPORT_SPOOL_MAX_BYTES, IMPORT_SPOOL_MAX_FILES_PER_UPLOAD
from dtbundle.oci import Descriptor, Reference
from dtbundle.registry import RegistryClient

T = TypeVar("T")
R = TypeVar("R")

JOIN_SECONDS = 5.0  # how long a stopped pool waits for its threads


def requests_at_once(concurrency: int, client: RegistryClient) -> int:
    """Small requests (HEAD, manifests, tags) side by side: twice the uploads, within the connection limit."""
    return max(1, min(2 * concurrency, client.config.limits.max_connections))


def run_all(work: Callable[[T], R], items: Sequence[T], parallel: int) -> list[R]:
    """``work`` of every item, at most ``parallel`` at once; results in item order.

    The first error is raised once the running calls ended; no further item is started after it
    (nor after an interrupt of the caller).
    """
    if parallel <= 1 or len(items) <= 1:
        return [work(item) for item in items]
    results: list[R | None] = [None] * len(items)
    failed: list[BaseException] = []
    lock = threading.Lock()
    indexes = iter(range(len(items)))

    def worker() -> None:
        while True:
            with lock:
                index = None if failed else next(indexes, None)
            if index is None:
                return
            try:
                results[index] = work(items[index])
            except BaseException as exc:
                with lock:
                    failed.append(exc)
                return

    threads = [
        threading.Thread(target=worker, name=f"dtbundle-request_{n}", daemon=True)
        for n in range(min(parallel, len(items)))
    ]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            thread.join()
    except BaseException as exc:  # Ctrl-C: start nothing more
        with lock:
            failed.append(exc)
        raise
    if failed:
        raise failed[0]
    return results  # type: ignore[return-value]


@dataclass
class Presence:
    """What the target holds already, asked once for the whole plan: (repository, digest) pairs."""

    blobs: set[tuple[Reference, str]] = field(default_factory=set)
    manifests: set[tuple[Reference, str]] = field(default_factory=set)


def probe(client: RegistryClient, plan: ImportPlan, parallel: int, manifests: bool = True) -> Presence:
    """HEAD every (repository, blob) pair of ``plan`` (and every manifest's), ``parallel`` at once."""
    blobs = [(repo, digest) for digest, repos in plan.blobs.items() for repo in sorted(repos, key=str)]
    manifest_pairs = (
        [(repo, d) for d in plan.order for repo in sorted(plan.manifests[d].repos, key=str)] if manifests else []
    )

    def head(pair: tuple[tuple[Reference, str], bool]) -> bool:
        (repo, digest), is_manifest = pair
        if is_manifest:
            return client.head_manifest(Reference(repo.registry, repo.repository, None, digest)) is not None
        return client.blob_size(repo, digest) is not None

    asked = [(p, False) for p in blobs] + [(p, True) for p in manifest_pairs]
    found = run_all(head, asked, parallel)
    presence = Presence()
    for (pair, is_manifest), there in zip(asked, found, strict=True):
        if there:
            (presence.manifests if is_manifest else presence.blobs).add(pair)
    return presence


def find_required(
    client: RegistryClient,
    plan: ImportPlan,
    presence: Presence,
    required: Mapping[str, tuple[int, tuple[str, ...]]],
    parallel: int,
    mount: bool = True,
    confines: Callable[[str, str], bool] = lambda registry, repository: True,
) -> tuple[set[tuple[Reference, str]], list[str]]:
    """Where the target lacks a blob a delta bundle requires, mount it from a repository of the same
    registry that holds it (another target of this import, or one the inventory saw it in, if it lies
    within the import's destinations: ``confines``); with ``mount`` False only ask (HEAD) whether one
    holds it. Returns the (repository, digest) pairs now held and a description of each one missing."""
    wanted = [
        (repo, digest)
        for digest in sorted(required)
        for repo in sorted(plan.blobs.get(digest, ()), key=str)
        if (repo, digest) not in presence.blobs
    ]

    def fetch(pair: tuple[Reference, str]) -> bool:
        repo, digest = pair
        size, seen = required[digest]
        desc = Descriptor("application/octet-stream", digest, size)
        holders = [
            r.repository for r, d in sorted(presence.blobs, key=str) if d == digest and r.registry == repo.registry
        ]
        for source in dict.fromkeys([*holders, *seen]):  # each once, targets of this import first
            if source == repo.repository or not confines(repo.registry, source):
                continue  # an inventory (unsigned, perhaps) must not choose what the importer's credentials read
            if not mount and client.blob_size(Reference(repo.registry, source), digest) is not None:
                return True
            if mount and client.mount_blob(repo, desc, source):
                return True
        return False

    found = run_all(fetch, wanted, parallel)
    held = {pair for pair, ok in zip(wanted, found, strict=True) if ok}
    missing = [f"{digest} in {repo}" for (repo, digest), ok in zip(wanted, found, strict=True) if not ok]
    return held, missing


class UploadPool:
    """Blob uploads on ``workers`` threads, each from its :class:`Spool`.

    :meth:`open` gives the reader a new copy, waiting while the copies alive (written, queued or
    being uploaded) hold ``window_bytes`` or ``window_files`` (one is always admitted): disk stays
    bounded by ``max(window_bytes, largest blob)``, memory by a read buffer per upload. The first
    error of an upload stops the pool and is raised to the reader (at its next :meth:`open`,
    :meth:`check` or :meth:`finish`).
    """

    def __init__(
        self, workers: int, window_bytes: int = IMPORT_SPOOL_MAX_BYTES, window_files: int | None = None
    ) -> None:
        self.workers = max(1, workers)
        self.window_bytes = window_bytes
        self.window_files = window_files or IMPORT_SPOOL_MAX_FILES_PER_UPLOAD * self.workers
        self._cond = threading.Condition()
        self._queue: deque[tuple[Spool, Callable[[], None]]] = deque()
        self._alive: set[Spool] = set()
        self._held_bytes = 0
        self._active = 0
        self._error: BaseException | None = None
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def open(self, digest: str, size: int) -> Spool:
        """A copy for the next blob, once there is room for it."""
        with self._cond:
            while True:
                self._raise_error()
                if not self._alive or (
                    self._held_bytes + size <= self.window_bytes and len(self._alive) < self.window_files
                ):
                    break
                self._cond.wait(0.5)
            spool = Spool(digest, size, self._closed)
            self._alive.add(spool)
            self._held_bytes += size
            return spool

    def submit(self, spool: Spool, upload: Callable[[], None]) -> None:
        """Run ``upload`` (which reads ``spool``) on a free upload thread, or once one is free."""
        with self._cond:
            if self._stopped:
                spool.fail()
                spool.done()
                return
            self._queue.append((spool, upload))
            if len(self._threads) < self.workers and self._active + len(self._queue) > len(self._threads):
                thread = threading.Thread(target=self._work, name=f"dtbundle-upload_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
            self._cond.notify_all()

    def check(self) -> None:
        """Raise the first upload error, if any."""
        with self._cond:
            self._raise_error()

    def finish(self) -> None:
        """Wait until every upload ended; raise the first error."""
        with self._cond:
            while (self._queue or self._active) and self._error is None:
                self._cond.wait(0.5)
            self._raise_error()
            self._stopped = True
            self._cond.notify_all()

    def cancel(self) -> None:
        """Stop: queued uploads are dropped, running ones fail at their next piece; threads joined briefly."""
        self._stop()
        deadline = time.monotonic() + JOIN_SECONDS
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def _stop(self) -> None:
        with self._cond:
            self._stopped = True
            dropped = list(self._queue)
            self._queue.clear()
            alive = list(self._alive)
            self._cond.notify_all()
        for spool in alive:
            spool.fail()
        for spool, _ in dropped:
            spool.done()

    def _closed(self, spool: Spool) -> None:
        with self._cond:
            if spool in self._alive:
                self._alive.discard(spool)
                self._held_bytes -= spool.size
            self._cond.notify_all()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopped:
                    self._cond.wait(0.5)
                if not self._queue:
                    return
                spool, upload = self._queue.popleft()
                self._active += 1
            try:
                upload()
            except BaseException as exc:
                with self._cond:
                    if self._error is None:
                        self._error = exc
                self._stop()
            finally:
                spool.done()
                with self._cond:
                    self._active -= 1
                    self._cond.notify_all()
