"""Time bounds and repeated requests (issue 12): a trickling server is a stall (retried, resumed,
then a clear failure), a transfer has a deadline, and a manifest named by digest is fetched
once however often it is named.

Servers that trickle on demand are httpx.MockTransport handlers (as the house rules allow for
injected protocol faults); the end-to-end faults through a real registry are in
``test_fault_injection.py``.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from dtbundle import oci
from dtbundle.errors import RegistryConnectionError, TransferDeadlineError
from dtbundle.export.plan import ImageRequest, Planner
from dtbundle.oci import Descriptor, sha256_digest
from dtbundle.oci.reference import Reference
from dtbundle.registry import CredentialResolver, RegistryClient
from tests.support.artifacts import EMPTY_MANIFEST
from tests.support.registries import registry_config

REG = "registry.test"
REF = Reference(REG, "team/app", "1.0")
BLOB = os.urandom(50_000)
BLOB_DESC = Descriptor("application/octet-stream", sha256_digest(BLOB), len(BLOB))
# Tiny bounds: a window of 0.2 s must move more than 1 KiB.
FAST = {"stall_timeout": 0.2, "max_stall_bytes": 1024, "backoff_initial": 0.001, "backoff_max": 0.002}
Handler = Callable[[httpx.Request], httpx.Response]


class StreamingTransport(httpx.BaseTransport):
    """Like httpx.MockTransport, but the handler reads the request body itself (at its own pace)."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.handler(request)


def client_for(handler: Handler, *, streaming: bool = False, **config: object) -> RegistryClient:
    transport = StreamingTransport(handler) if streaming else httpx.MockTransport(handler)
    return RegistryClient(
        registry_config(**{**FAST, **config}),
        CredentialResolver({}, use_config_files=False),
        transport=transport,
        sleep=lambda _: None,
    )


def trickle(data: bytes, step: int = 1, every: float = 0.02) -> Iterator[bytes]:
    """``data``, ``step`` bytes every ``every`` seconds (one byte every 20 ms: 10 bytes per window)."""
    for start in range(0, len(data), step):
        time.sleep(every)
        yield data[start : start + step]


def ranged(request: httpx.Request) -> httpx.Response:
    start = int(request.headers["Range"].split("=")[1].rstrip("-"))
    return httpx.Response(206, content=BLOB[start:], headers={"Content-Range": f"bytes {start}-{len(BLOB) - 1}/*"})


# -- stalls -----------------------------------------------------------------------------------------
def test_a_trickling_download_stalls_and_resumes_with_range() -> None:
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("Range"))
        if len(ranges) == 1:  # 100 bytes at full speed, then one byte every 20 ms
            return httpx.Response(200, content=itertools.chain([BLOB[:100]], trickle(BLOB[100:200])))
        return ranged(request)

    out = io.BytesIO()
    started = time.monotonic()
    client_for(handler).download_blob(REF, BLOB_DESC, out)
    assert out.getvalue() == BLOB
    assert ranges[0] is None and ranges[1] is not None and int(ranges[1][6:-1]) >= 100
    assert time.monotonic() - started < 1.5  # one window, not the two seconds of the trickle


def test_an_endless_trickle_fails_after_the_resume_limit_naming_the_bound() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(200, content=trickle(BLOB))  # Range ignored: every resume starts over

    with pytest.raises(RegistryConnectionError) as info:
        client_for(handler, max_resumes=2, max_attempts=1).download_blob(REF, BLOB_DESC, io.BytesIO())
    message = str(info.value)
    assert "stalled" in message and "--stall-timeout" in message and BLOB_DESC.digest in message
    assert len(calls) <= 3


def test_a_trickled_manifest_is_requested_again() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        body = MANIFEST if len(calls) > 1 else trickle(MANIFEST)
        return httpx.Response(200, content=body, headers={"Content-Type": oci.OCI_MANIFEST})

    assert client_for(handler).get_manifest(REF).data == MANIFEST
    assert len(calls) == 2


def test_a_manifest_that_always_trickles_is_a_clean_connection_error() -> None:
    client = client_for(lambda r: httpx.Response(200, content=trickle(MANIFEST)), max_attempts=2)
    with pytest.raises(RegistryConnectionError) as info:
        client.get_manifest(REF)
    assert "stalled" in str(info.value) and "2 attempt" in str(info.value) and "manifest" in str(info.value)


def test_a_stalled_upload_chunk_is_resumed() -> None:
    """The registry stops reading the second chunk: the stall is a failed chunk, resumed from its offset."""
    held = bytearray()
    patches: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        loc = {"Location": "/v2/team/app/blobs/uploads/u1"}
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            return httpx.Response(202, headers=loc)
        if request.method == "PATCH":
            patches.append(request.headers["Content-Range"])
            received = bytearray()
            for piece in request.stream:  # type: ignore[union-attr]
                if len(patches) == 2:
                    time.sleep(0.25)  # a slow reader: more than a window per piece
                received += piece
            request.stream.close()  # type: ignore[union-attr]
            held.extend(received)
            return httpx.Response(202, headers={**loc, "Range": f"0-{len(held) - 1}"})
        if request.method == "GET":
            return httpx.Response(204, headers={**loc, "Range": f"0-{len(held) - 1}"})
        return httpx.Response(201, headers={"Docker-Content-Digest": sha256_digest(bytes(held))})

    # A window must move more than 64 KiB: one piece (at most 64 KiB) every 0.25 s is a stall.
    client = client_for(
        handler, streaming=True, max_stall_bytes=64 * 1024, monolithic_upload_max=1000, upload_chunk_bytes=20_000
    )
    assert client.upload_blob(REF, BLOB_DESC, lambda: io.BytesIO(BLOB)) == "uploaded"
    assert bytes(held) == BLOB
    assert patches[:3] == ["0-19999", "20000-39999", "20000-39999"]


# -- deadline ---------------------------------------------------------------------------------------
def test_a_transfer_past_its_deadline_fails_and_is_not_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)  # 2 KiB every 20 ms: never a stall, but 0.5 s for the blob
        return httpx.Response(200, content=trickle(BLOB, step=2048))

    with pytest.raises(TransferDeadlineError) as info:
        client_for(handler, max_transfer_seconds=0.2).download_blob(REF, BLOB_DESC, io.BytesIO())
    assert "--transfer-deadline" in str(info.value) and info.value.exit_code == 1
    assert calls == [1]


# -- repeated requests -----------------------------------------------------------------------------
MANIFEST = EMPTY_MANIFEST
CHILD = sha256_digest(MANIFEST)


def index_naming(child: str, times: int) -> bytes:
    entry = {
        "mediaType": oci.OCI_MANIFEST,
        "digest": child,
        "size": len(MANIFEST),
        "platform": {"os": "linux", "architecture": "amd64"},
    }
    return json.dumps({"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [entry] * times}).encode()


class CountingRegistry:
    """An index naming one child 10,000 times; counts the requests for each path."""

    def __init__(self) -> None:
        self.index = index_naming(CHILD, 10_000)
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests[request.url.path] = self.requests.get(request.url.path, 0) + 1
        path = request.url.path
        if path.endswith("/manifests/1.0"):
            return httpx.Response(200, content=self.index, headers={"Content-Type": oci.OCI_INDEX})
        if path.endswith(f"/manifests/{CHILD}"):
            return httpx.Response(200, content=MANIFEST, headers={"Content-Type": oci.OCI_MANIFEST})
        return httpx.Response(404)


def test_an_index_naming_one_child_10000_times_fetches_it_once() -> None:
    registry = CountingRegistry()
    with client_for(registry) as client:
        plan = Planner(client, referrers=True).build([ImageRequest(str(REF), REF)])
    assert registry.requests[f"/v2/team/app/manifests/{CHILD}"] == 1
    assert list(plan.manifests) == [sha256_digest(registry.index), CHILD]
    assert len(plan.images[0].platforms) == 1
    # Attachments of the child are looked up once too, not 10,000 times.
    assert max(registry.requests.values()) <= 2 and sum(registry.requests.values()) < 20


def test_a_manifest_by_digest_is_fetched_once_per_client_even_concurrently() -> None:
    registry = CountingRegistry()
    ref = REF.with_digest(CHILD)
    with client_for(registry) as client:
        threads = [threading.Thread(target=client.get_manifest, args=(ref,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert client.get_manifest(ref).data == MANIFEST
        # Another repository is another question; a tag is never answered from the cache.
        client.get_manifest(Reference(REG, "team/other", None, CHILD))
        client.get_manifest(REF)
        client.get_manifest(REF)
    assert registry.requests[f"/v2/team/app/manifests/{CHILD}"] == 1
    assert registry.requests[f"/v2/team/other/manifests/{CHILD}"] == 1
    assert registry.requests["/v2/team/app/manifests/1.0"] == 2


def test_the_manifest_cache_is_bounded() -> None:
    registry = CountingRegistry()
    ref = REF.with_digest(CHILD)
    with client_for(registry, max_manifest_cache_bytes=len(MANIFEST) - 1) as client:
        client.get_manifest(ref)
        client.get_manifest(ref)
    assert registry.requests[f"/v2/team/app/manifests/{CHILD}"] == 2


def test_a_registry_without_the_referrers_api_is_asked_once_then_the_tag_schema_is_used() -> None:
    """The OCI distribution spec forbids a 404 from a registry that has the API: one 404 says the
    registry lacks it, and each further subject costs one request (the referrers tag), not two."""
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND", "message": "no"}]})

    subjects = ["sha256:" + c * 64 for c in "123"]
    resolver = CredentialResolver({}, use_config_files=False)
    with RegistryClient(registry_config(), resolver, transport=httpx.MockTransport(handler)) as client:
        ref = Reference("registry.test", "team/app")
        assert [client.list_referrers(ref, s).source for s in subjects] == ["none"] * 3
    assert sum("/referrers/" in p for p in paths) == 1
    assert sum("/manifests/sha256-" in p for p in paths) == 3


def test_planning_lists_a_repositorys_tags_once_instead_of_probing_each_subject() -> None:
    """Over a slow link every request is a round trip: the cosign tags that exist are known from one
    tag listing, so subjects without signatures cost nothing more (before: four probes each)."""
    from concurrent.futures import ThreadPoolExecutor

    from dtbundle.discovery import Lookups

    signed, unsigned = "sha256:" + "a" * 64, ["sha256:" + c * 64 for c in "bcd"]
    sig_tag = "sha256-" + "a" * 64 + ".sig"
    config = b"{}"
    sig = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_MANIFEST,
            "layers": [],
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256_digest(config),
                "size": 2,
            },
        }
    ).encode()
    paths: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        paths.append(request.url.path)
        if request.url.path.endswith("/tags/list"):
            return httpx.Response(200, json={"name": "team/app", "tags": ["1.0", sig_tag]})
        if request.url.path.endswith(f"/manifests/{sig_tag}"):
            return httpx.Response(200, content=sig, headers={"Content-Type": oci.OCI_MANIFEST})
        return httpx.Response(404, json={"errors": [{"code": "NOT_FOUND", "message": "no"}]})

    resolver = CredentialResolver({}, use_config_files=False)
    ref = Reference("registry.test", "team/app")
    with (
        RegistryClient(registry_config(), resolver, transport=httpx.MockTransport(handler)) as client,
        ThreadPoolExecutor(4) as pool,
    ):
        lookups = Lookups(client, pool)
        for subject in [signed, *unsigned]:
            lookups.probe(ref, subject)
        found = {s: [a.kind for a in lookups.attachments(ref, s)] for s in [signed, *unsigned]}
    assert found == {signed: ["cosign.sig"], **{s: [] for s in unsigned}}
    # One listing, the one signature, and one referrers API request (404: no API here) with its
    # fallback tag: the registry's answer then holds for every other subject.
    assert sorted(paths) == sorted([
        "/v2/team/app/tags/list", f"/v2/team/app/manifests/{sig_tag}",
        f"/v2/team/app/referrers/{signed}", f"/v2/team/app/manifests/{sig_tag.removesuffix('.sig')}",
    ]), paths  # fmt: skip
