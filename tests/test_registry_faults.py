"""What a real registry cannot show on demand: the OCI referrers API, and injected protocol
faults (dropped connections, 5xx/429 storms, lying digests, CDN redirects).

These use httpx.MockTransport, as the house rules allow for exactly these cases.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterator

import httpx
import pytest

from dtbundle import oci
from dtbundle.errors import (
    DigestMismatchError,
    LimitExceededError,
    RegistryConnectionError,
    RegistryError,
    UnsupportedManifestError,
)
from dtbundle.oci import Descriptor, sha256_digest
from dtbundle.oci.reference import Reference
from dtbundle.registry import CredentialResolver, Credentials, RegistryClient
from tests.support.artifacts import EMPTY_MANIFEST
from tests.support.registries import registry_config

REG = "registry.test"
REF = Reference(REG, "team/app", "1.0")
Handler = Callable[[httpx.Request], httpx.Response]


def client_for(handler: Handler, *, creds: bool = False, **config: object) -> tuple[RegistryClient, list[float]]:
    sleeps: list[float] = []
    explicit = {REG: Credentials("test", "u", "p")} if creds else {}
    settings: dict[str, object] = {"backoff_initial": 0.01}
    settings.update(config)
    client = RegistryClient(
        registry_config(**settings),
        CredentialResolver(explicit, use_config_files=False),  # type: ignore[arg-type]
        transport=httpx.MockTransport(handler),
        sleep=sleeps.append,
    )
    return client, sleeps


def manifest_response(data: bytes, media_type: str = oci.OCI_MANIFEST, digest: str | None = None) -> httpx.Response:
    headers = {"Content-Type": media_type, "Docker-Content-Digest": digest or sha256_digest(data)}
    return httpx.Response(200, content=data, headers=headers)


MANIFEST = EMPTY_MANIFEST


# -- referrers API --------------------------------------------------------------------------
def test_referrers_api_with_pagination_and_client_side_filter() -> None:
    subject = "sha256:" + "1" * 64
    sig = Descriptor(oci.OCI_MANIFEST, "sha256:" + "2" * 64, 500, artifact_type=oci.SIGSTORE_BUNDLE_V03)
    sbom = Descriptor(oci.OCI_MANIFEST, "sha256:" + "3" * 64, 600, artifact_type="application/spdx+json")

    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.path == f"/v2/team/app/referrers/{subject}"
        page2 = request.url.params.get("last") == "x"
        body = {
            "schemaVersion": 2,
            "mediaType": oci.OCI_INDEX,
            "manifests": [(sbom if page2 else sig).to_json()],
        }
        headers = {"Content-Type": oci.OCI_INDEX}
        if not page2:
            headers["Link"] = f'</v2/team/app/referrers/{subject}?last=x>; rel="next"'
        return httpx.Response(200, json=body, headers=headers)

    client, _ = client_for(handler)
    everything = client.list_referrers(REF, subject)
    assert everything.source == "api" and everything.descriptors == (sig, sbom)
    # The registry did not say OCI-Filters-Applied, so we filter ourselves.
    assert client.list_referrers(REF, subject, artifact_type=oci.SIGSTORE_BUNDLE_V03).descriptors == (sig,)


# -- retries ----------------------------------------------------------------------------------
def test_5xx_is_retried_with_backoff_then_succeeds() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(503) if len(calls) < 3 else manifest_response(MANIFEST)

    client, sleeps = client_for(handler)
    assert client.get_manifest(REF).data == MANIFEST
    assert len(calls) == 3 and len(sleeps) == 2


def test_429_honours_retry_after() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(429, headers={"Retry-After": "7"})
        return manifest_response(MANIFEST)

    client, sleeps = client_for(handler)
    client.get_manifest(REF)
    assert sleeps == [7.0]


def test_retries_are_bounded_and_reported() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(502)

    client, sleeps = client_for(handler, max_attempts=4)
    with pytest.raises(RegistryError) as info:
        client.get_manifest(REF)
    assert len(calls) == 4 and len(sleeps) == 3 and "502" in str(info.value)
    assert all(s <= 0.08 for s in sleeps)  # jittered, capped by the exponential schedule


def test_other_4xx_are_never_retried() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        return httpx.Response(400, json={"errors": [{"code": "NAME_INVALID", "message": "bad name"}]})

    client, sleeps = client_for(handler)
    with pytest.raises(RegistryError) as info:
        client.get_manifest(REF)
    assert calls == [1] and sleeps == [] and "NAME_INVALID" in str(info.value)


def test_connection_errors_are_retried_then_translated() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    client, sleeps = client_for(handler, max_attempts=3)
    with pytest.raises(RegistryConnectionError) as info:
        client.get_manifest(REF)
    assert len(sleeps) == 2 and REG in str(info.value) and "3 attempt" in str(info.value)


# -- manifest integrity -------------------------------------------------------------------------
def test_tag_fetch_with_lying_docker_content_digest_is_an_integrity_error() -> None:
    client, _ = client_for(lambda r: manifest_response(MANIFEST, digest="sha256:" + "f" * 64))
    with pytest.raises(DigestMismatchError) as info:
        client.get_manifest(REF)
    assert info.value.exit_code == 3


def test_digest_fetch_verifies_the_body() -> None:
    wrong = "sha256:" + "e" * 64
    client, _ = client_for(lambda r: manifest_response(MANIFEST, digest=wrong))
    with pytest.raises(DigestMismatchError):
        client.get_manifest(REF.with_digest(wrong))


def test_oversized_manifest_is_refused() -> None:
    big = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_INDEX,
            "manifests": [],
            "annotations": {"x": "y" * 5000},
        }
    ).encode()
    client, _ = client_for(lambda r: manifest_response(big, oci.OCI_INDEX), max_manifest_bytes=4096)
    with pytest.raises(LimitExceededError):
        client.get_manifest(REF)


def test_schema1_is_reported_as_unsupported() -> None:
    body = json.dumps({"schemaVersion": 1, "name": "team/app", "tag": "1.0", "fsLayers": []}).encode()
    client, _ = client_for(lambda r: manifest_response(body, oci.DOCKER_SCHEMA1_SIGNED))
    with pytest.raises(UnsupportedManifestError) as info:
        client.get_manifest(REF)
    assert "schema1" in str(info.value)


def test_manifest_accept_header_offers_all_four_types_and_no_schema1() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Accept"])
        return manifest_response(MANIFEST)

    client_for(handler)[0].get_manifest(REF)
    for media_type in (
        oci.OCI_INDEX,
        oci.OCI_MANIFEST,
        oci.DOCKER_MANIFEST_LIST,
        oci.DOCKER_MANIFEST,
    ):
        assert media_type in seen[0]
    assert oci.DOCKER_SCHEMA1 not in seen[0] and oci.DOCKER_SCHEMA1_SIGNED not in seen[0]


# -- blobs ---------------------------------------------------------------------------------------
BLOB = os.urandom(300_000)
BLOB_DESC = Descriptor("application/octet-stream", sha256_digest(BLOB), len(BLOB))


def _dropping(data: bytes, after: int, request: httpx.Request) -> Iterator[bytes]:
    yield data[:after]
    raise httpx.ReadError("connection reset by peer", request=request)


def test_dropped_download_resumes_with_range() -> None:
    ranges: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        ranges.append(request.headers.get("Range"))
        if len(ranges) == 1:
            return httpx.Response(200, content=_dropping(BLOB, 100_000, request))
        start = int(request.headers["Range"].split("=")[1].rstrip("-"))
        return httpx.Response(
            206,
            content=BLOB[start:],
            headers={"Content-Range": f"bytes {start}-{len(BLOB) - 1}/{len(BLOB)}"},
        )

    client, _ = client_for(handler)
    out = io.BytesIO()
    client.download_blob(REF, BLOB_DESC, out)
    assert out.getvalue() == BLOB and ranges == [None, "bytes=100000-"]


def test_server_ignoring_range_restarts_cleanly() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, content=_dropping(BLOB, 50_000, request))
        return httpx.Response(200, content=BLOB)  # Range ignored: whole blob again

    client, _ = client_for(handler)
    out = io.BytesIO()
    progress: list[int] = []
    client.download_blob(REF, BLOB_DESC, out, progress.append)
    assert out.getvalue() == BLOB and sum(progress) == len(BLOB)


def test_endless_drops_give_up_after_the_resume_limit() -> None:
    client, _ = client_for(lambda r: httpx.Response(200, content=_dropping(BLOB, 10, r)), max_resumes=3)
    with pytest.raises(RegistryConnectionError) as info:
        client.download_blob(REF, BLOB_DESC, io.BytesIO())
    assert "4 times" in str(info.value)


def test_blob_longer_than_descriptor_is_cut_off() -> None:
    client, _ = client_for(lambda r: httpx.Response(200, content=BLOB + b"extra"))
    with pytest.raises(DigestMismatchError):
        client.download_blob(REF, BLOB_DESC, io.BytesIO())


def test_redirect_to_cdn_drops_authorization() -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.host == "cdn.example":
            seen["cdn"] = request.headers.get("Authorization")
            return httpx.Response(200, content=BLOB)
        if "Authorization" not in request.headers:
            return httpx.Response(401, headers={"WWW-Authenticate": 'Basic realm="test"'})
        seen["registry"] = request.headers["Authorization"]
        return httpx.Response(307, headers={"Location": "https://cdn.example/blobs/x?sig=abc"})

    client, _ = client_for(handler, creds=True)
    out = io.BytesIO()
    client.download_blob(REF, BLOB_DESC, out)
    assert out.getvalue() == BLOB
    assert seen["registry"] and seen["registry"].startswith("Basic ") and seen["cdn"] is None


def test_redirect_loops_are_bounded() -> None:
    client, _ = client_for(lambda r: httpx.Response(302, headers={"Location": "/v2/team/app/blobs/again"}))
    with pytest.raises(RegistryError) as info:
        client.download_blob(REF, BLOB_DESC, io.BytesIO())
    assert "redirect" in str(info.value)


# -- uploads ---------------------------------------------------------------------------
class FlakyUploadRegistry:
    """Accepts chunked uploads; drops the connection on the second PATCH once."""

    def __init__(self, min_chunk: int | None = None) -> None:
        self.held = bytearray()
        self.patches: list[str] = []
        self.dropped = False
        self.min_chunk = min_chunk
        self.final: bytes | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        loc = {"Location": "/v2/team/app/blobs/uploads/u1?state=1"}
        if request.method == "HEAD":
            return httpx.Response(404)
        if request.method == "POST":
            headers = dict(loc)
            if self.min_chunk:
                headers["OCI-Chunk-Min-Length"] = str(self.min_chunk)
            return httpx.Response(202, headers={**headers, "Range": "0-0"})
        if request.method == "PATCH":
            start = int(request.headers["Content-Range"].split("-")[0])
            body = request.read()
            self.patches.append(request.headers["Content-Range"])
            if len(self.patches) == 2 and not self.dropped:
                self.dropped = True
                self.held[start:] = body[: len(body) // 2]  # half arrived, then the link died
                raise httpx.WriteError("broken pipe", request=request)
            assert start == len(self.held), "chunk must continue where the registry is"
            self.held += body
            return httpx.Response(202, headers={**loc, "Range": f"0-{len(self.held) - 1}"})
        if request.method == "GET" and path.endswith("/u1"):
            return httpx.Response(204, headers={**loc, "Range": f"0-{len(self.held) - 1}"})
        if request.method == "PUT":
            assert request.url.params["digest"] == BLOB_DESC.digest
            self.final = bytes(self.held)
            return httpx.Response(
                201,
                headers={"Docker-Content-Digest": "sha256:" + hashlib.sha256(self.held).hexdigest()},
            )
        return httpx.Response(500)


def test_chunked_upload_resumes_from_the_registry_offset_after_a_drop() -> None:
    registry = FlakyUploadRegistry()
    client, _ = client_for(registry, monolithic_upload_max=1000, upload_chunk_bytes=100_000)
    assert client.upload_blob(REF, BLOB_DESC, lambda: io.BytesIO(BLOB)) == "uploaded"
    assert registry.final == BLOB and registry.dropped
    # The chunk 100000-199999 broke after 50000 bytes: only its tail is re-sent, from memory.
    assert registry.patches == ["0-99999", "100000-199999", "150000-199999", "200000-299999"]


def test_chunk_size_honours_oci_chunk_min_length() -> None:
    registry = FlakyUploadRegistry(min_chunk=200_000)
    registry.dropped = True  # no fault this time
    client, _ = client_for(registry, monolithic_upload_max=1000, upload_chunk_bytes=50_000)
    client.upload_blob(REF, BLOB_DESC, lambda: io.BytesIO(BLOB))
    assert registry.patches == ["0-199999", "200000-299999"] and registry.final == BLOB
