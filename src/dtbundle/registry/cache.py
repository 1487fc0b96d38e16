"""Manifests fetched by digest, kept for the life of one client: each is fetched once per run.

A manifest named by its digest cannot change, so asking the registry again (an index
naming one child 10,000 times, a subject shared by many images) only costs time. The
cache is keyed by (registry, repository, digest), since a digest present in one
repository says nothing about another; it holds at most ``max_manifest_cache_bytes``
bytes of manifest data and evicts the oldest entries beyond that. Concurrent requests for
one key wait for the first fetch instead of sending their own. Failures (404 included)
are not kept.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

from dtbundle.registry.values import Manifest

Key = tuple[str, str, str]  # registry, repository, digest


class ManifestCache:
    """A bounded, thread-safe map of (registry, repository, digest) to :class:`Manifest`."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Key, Manifest] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._fetching: dict[Key, threading.Lock] = {}

    def get(self, key: Key, fetch: Callable[[], Manifest]) -> Manifest:
        """The manifest of ``key``: kept, or from ``fetch`` (called once however many threads ask)."""
        with self._lock:
            if (found := self._entries.get(key)) is not None:
                return found
            gate = self._fetching.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                if (found := self._entries.get(key)) is not None:
                    return found
            try:
                manifest = fetch()
                self._put(key, manifest)
            finally:
                with self._lock:
                    self._fetching.pop(key, None)
            return manifest

    def _put(self, key: Key, manifest: Manifest) -> None:
        if manifest.size > self.max_bytes:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = manifest
            self._bytes += manifest.size
            while self._bytes > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._bytes -= evicted.size

    def __len__(self) -> int:
        return len(self._entries)
