"""The OCI distribution client: manifests, blobs, tags and referrers.

Every read is verified: a manifest fetched by digest must hash to that digest,
one fetched by tag must match ``Docker-Content-Digest`` when the registry sends
it, and a blob is hashed and counted while it streams. Bytes are returned
exactly as received; nothing is re-serialised. A body kept in memory (manifest, list)
that is cut off or stalls is fetched again, within ``max_attempts``; a manifest
fetched by digest is fetched once per client (:mod:`~dtbundle.registry.cache`).
"""

from __future__ import annotations

import contextlib
import hmac
import io
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import BinaryIO, Literal
from urllib.parse import urljoin

import httpx

from dtbundle.errors import (
    DigestMismatchError,
    LimitExceededError,
    NotFoundError,
    RegistryError,
    RegistryProtocolError,
)
from dtbundle.oci import (
    INDEX_TYPES,
    MANIFEST_ACCEPT,
    Descriptor,
    check_digest,
    compute_digest,
    detect_media_type,
    load_json_object,
    referrers_tag,
    verify_bytes,
)
from dtbundle.oci.reference import Reference, is_valid_path, is_valid_tag
from dtbundle.registry import download as _download
from dtbundle.registry import upload as _upload
from dtbundle.registry.bounded import read_with_retries
from dtbundle.registry.cache import ManifestCache
from dtbundle.registry.config import RegistryConfig
from dtbundle.registry.credentials import CredentialResolver
from dtbundle.registry.session import Session, Target
from dtbundle.registry.values import Manifest, PutResult, Referrers

Progress = Callable[[int], None]
UploadOutcome = Literal["exists", "mounted", "uploaded"]


class RegistryClient:
    """A synchronous, thread-safe client for one or more OCI registries."""

    def __init__(
        self,
        config: RegistryConfig | None = None,
        credentials: CredentialResolver | None = None,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.config = config or RegistryConfig()
        self.credentials = credentials or CredentialResolver()
        self._session = Session(self.config, self.credentials, transport=transport, sleep=sleep)
        self._sleep = sleep
        self._manifests = ManifestCache(self.config.limits.max_manifest_cache_bytes)
        # Registries whose referrers API answered 404: a registry that has the API never does
        # (OCI distribution spec), so later subjects go straight to the referrers tag.
        self._no_referrers_api: set[str] = set()

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _target(ref: Reference, actions: tuple[str, ...] = ("pull",), extra: tuple[str, ...] = ()) -> Target:
        return Target(ref.registry, ref.api_host, ref.repository, actions, extra)

    # -- manifests -----------------------------------------------------------------------
    def get_manifest(self, ref: Reference) -> Manifest:
        """Fetch a manifest by ``ref.digest`` (verified; once per client) or ``ref.tag`` (digest computed)."""
        if ref.digest:
            return self._manifests.get((ref.registry, ref.repository, ref.digest), lambda: self._fetch_manifest(ref))
        return self._fetch_manifest(ref)

    def _fetch_manifest(self, ref: Reference) -> Manifest:
        what = f"manifest {ref}"
        response, data = read_with_retries(
            self._session,
            self._target(ref),
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            what,
            self.config.limits.max_manifest_bytes,
            headers={"Accept": MANIFEST_ACCEPT},
            sleep=self._sleep,
        )
        media_type = detect_media_type(data, _content_type(response))
        if ref.digest:
            verify_bytes(data, ref.digest, what)
            return Manifest(data, media_type, ref.digest)
        digest = compute_digest(data)
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed:
            algorithm = claimed.split(":", 1)[0]
            if algorithm in ("sha256", "sha512") and not hmac.compare_digest(compute_digest(data, algorithm), claimed):
                raise DigestMismatchError(
                    f"{what}: registry claims digest {claimed} but the bytes hash to {compute_digest(data, algorithm)}"
                )
        return Manifest(data, media_type, digest)

    def head_manifest(self, ref: Reference) -> Descriptor | None:
        """The descriptor of ``ref`` if it exists, else None."""
        response = self._session.request(
            "HEAD",
            self._target(ref),
            f"/v2/{ref.repository}/manifests/{ref.identifier}",
            what=f"manifest {ref}",
            ok=(200, 404),
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            return None
        digest = response.headers.get("Docker-Content-Digest") or ref.digest
        length = response.headers.get("Content-Length")
        if not digest or length is None or not length.isdigit():
            # Some registries omit these on HEAD; the GET answers for sure.
            return self.get_manifest(ref).descriptor()
        return Descriptor(_content_type(response) or "", check_digest(digest), int(length))

    def put_manifest(self, ref: Reference, data: bytes, media_type: str) -> PutResult:
        """Store ``data`` under ``ref``'s tag (or digest) with Content-Type ``media_type``."""
        if len(data) > self.config.limits.max_manifest_bytes:
            raise LimitExceededError(f"manifest for {ref} is larger than {self.config.limits.max_manifest_bytes} bytes")
        digest = compute_digest(data)
        identifier = ref.tag or ref.digest or digest
        if ref.digest and not ref.tag:
            verify_bytes(data, ref.digest, f"manifest for {ref}")
        response = self._session.request(
            "PUT",
            self._target(ref, ("pull", "push")),
            f"/v2/{ref.repository}/manifests/{identifier}",
            what=f"manifest {ref}",
            ok=(200, 201, 202),
            headers={"Content-Type": media_type},
            body=data,
        )
        response.close()
        claimed = response.headers.get("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise DigestMismatchError(f"registry stored manifest {ref} as {claimed}, expected {digest}")
        return PutResult(digest, subject_accepted="OCI-Subject" in response.headers)

    # -- blobs ---------------------------------------------------------------------------
    def blob_size(self, ref: Reference, digest: str) -> int | None:
        """Size of blob ``digest`` in ``ref``'s repository, or None when absent."""
        response = self._session.request(
            "HEAD",
            self._target(ref),
            f"/v2/{ref.repository}/blobs/{check_digest(digest)}",
            what=f"blob {digest} in {ref.name}",
            ok=(200, 404),
            follow_redirects=True,
        )
        if response.status_code == 404:
            return None
        length = response.headers.get("Content-Length", "")
        return int(length) if length.isdigit() else -1

    def download_blob(self, ref: Reference, desc: Descriptor, out: BinaryIO, progress: Progress | None = None) -> None:
        """Stream blob ``desc`` into ``out``, verifying size and digest; resume on drops.

        ``out`` must be seekable. What was written is unverified until this returns:
        on error, the caller must discard it.
        """
        _download.download(self._session, self._target(ref), ref, desc, out, progress, self._sleep)

    def fetch_blob(
        self, ref: Reference, desc: Descriptor, dest: Path, progress: Progress | None = None, *, resumable: bool = False
    ) -> None:
        """Download into a temp file beside ``dest`` and move it into place once verified
        (``resumable``: a partial file is kept and continued; see :func:`_download.fetch`)."""
        _download.fetch(self._session, self._target(ref), ref, desc, dest, progress, self._sleep, resumable)

    def get_blob_bytes(self, ref: Reference, desc: Descriptor) -> bytes:
        """A small blob (config, signature payload) in memory, verified."""
        if desc.size > self.config.limits.max_small_blob_bytes:
            raise LimitExceededError(
                f"blob {desc.digest} is {desc.size} bytes, above the in-memory limit "
                f"of {self.config.limits.max_small_blob_bytes}"
            )
        buffer = io.BytesIO()
        self.download_blob(ref, desc, buffer)
        return buffer.getvalue()

    def upload_blob(
        self,
        ref: Reference,
        desc: Descriptor,
        open_content: Callable[[], BinaryIO],
        *,
        mount_from: str | None = None,
        progress: Progress | None = None,
    ) -> UploadOutcome:
        """Make blob ``desc`` exist in ``ref``'s repository.

        Skips the upload when the blob is there, tries a cross-repository mount
        from ``mount_from`` (a repository of the same registry), else uploads:
        monolithic POST+PUT for small blobs, chunked PATCH for large ones.
        ``open_content`` opens the content afresh (it may be called again to retry).
        """
        if self.blob_size(ref, desc.digest) is not None:
            return "exists"
        target, location, min_chunk = self._begin_upload(ref, desc, mount_from)
        if location is None:
            return "mounted"
        if desc.size <= self.config.monolithic_upload_max:
            body = _upload.replayable(open_content, desc.size, progress)
            _upload.put_whole(self._session, target, desc, location, body, None)
        else:
            pieces = _upload.file_pieces(open_content, desc.size)
            chunk = max(self.config.upload_chunk_bytes, min_chunk)
            _upload.put_chunks(self._session, target, desc, location, pieces, chunk, progress)
        return "uploaded"

    def upload_blob_stream(
        self,
        ref: Reference,
        desc: Descriptor,
        pieces: Iterator[bytes],
        *,
        mount_from: str | None = None,
        progress: Progress | None = None,
    ) -> UploadOutcome:
        """Upload blob ``desc`` from a one-pass iterator, without a HEAD first.

        At most one chunk (``stream_chunk_bytes``) is held in memory; each chunk can
        be retried from it. On "mounted" the iterator is left unread.
        """
        target, location, min_chunk = self._begin_upload(ref, desc, mount_from)
        if location is None:
            return "mounted"
        chunk = max(self.config.stream_chunk_bytes, min_chunk)
        if desc.size <= chunk:
            data = b"".join(pieces)
            if len(data) != desc.size:
                raise DigestMismatchError(f"blob {desc.digest} is {len(data)} bytes, expected {desc.size}")
            _upload.put_whole(self._session, target, desc, location, data, progress)
        else:
            _upload.put_chunks(self._session, target, desc, location, pieces, chunk, progress)
        return "uploaded"

    def upload_blob_from(self, ref: Reference, desc: Descriptor, read_from: Callable[[int], Iterator[bytes]]) -> None:
        """Upload blob ``desc`` (known to be absent; no HEAD, no mount) in one streamed request.

        ``read_from(offset)`` streams the content from ``offset``; after a failure the upload goes
        on from what the registry holds (:func:`_upload.put_stream`). An upload session the
        registry no longer knows is fine when the blob is there (a commit whose answer was lost).
        """
        target, location, _ = self._begin_upload(ref, desc, None)
        assert location is not None  # no mount was asked for
        monolithic = desc.size <= self.config.monolithic_upload_max
        try:
            _upload.put_stream(self._session, target, desc, location, read_from, monolithic)
        except NotFoundError:
            if self.blob_size(ref, desc.digest) is None:
                raise

    def mount_blob(self, ref: Reference, desc: Descriptor, from_repository: str) -> bool:
        """Cross-repository mount only: True when mounted; an upload session the
        registry opened instead is cancelled."""
        target, location, _ = self._begin_upload(ref, desc, from_repository)
        if location is None:
            return True
        with contextlib.suppress(RegistryError):
            self._session.request(
                "DELETE", target, location, what=f"cancel upload to {ref.name}", ok=(202, 204, 404)
            ).close()
        return False

    def _begin_upload(self, ref: Reference, desc: Descriptor, mount_from: str | None) -> tuple[Target, str | None, int]:
        mount = mount_from if mount_from and mount_from != ref.repository else None
        extra = (f"repository:{mount}:pull",) if mount else ()
        target = self._target(ref, ("pull", "push"), extra)
        location, min_chunk = _upload.begin(self._session, target, desc, mount)
        return target, location, min_chunk

    # -- tags and referrers ----------------------------------------------------------------
    def list_tags(self, ref: Reference, page_size: int = 1000) -> list[str]:
        """Every tag of ``ref``'s repository, following ``Link`` pagination."""
        tags: list[str] = []
        for body in self._paginate(
            ref, f"/v2/{ref.repository}/tags/list", {"n": str(page_size)}, f"tags of {ref.name}"
        ):
            page = body.get("tags") or []
            if not isinstance(page, list):
                raise RegistryProtocolError(f"tag list of {ref.name} is malformed")
            # A name that is not a tag (``../x``, ``a?b``, control characters) can never be
            # pulled or pushed: it is left out here, where the registry's answer is parsed.
            tags.extend(t for t in page if isinstance(t, str) and is_valid_tag(t))
        return tags

    def list_repositories(self, registry: str, page_size: int = 1000) -> list[str]:
        """Every repository ``registry``'s catalog API (``/v2/_catalog``) lists, following ``Link`` pagination.

        Asked without a repository scope: a token registry's challenge names the one it needs
        (``registry:catalog:*``). Names outside the path grammar are left out, as in :meth:`list_tags`.
        """
        what = f"repository catalog of {registry}"
        names: list[str] = []
        for body in self._paginate(Reference(registry, ""), "/v2/_catalog", {"n": str(page_size)}, what):
            page = body.get("repositories") or []
            if not isinstance(page, list):
                raise RegistryProtocolError(f"{what} is malformed")
            names.extend(n for n in page if isinstance(n, str) and is_valid_path(n))
        return names

    def lacks_referrers_api(self, registry: str) -> bool:
        """Whether ``registry``'s referrers API answered 404 (it has none) in this client's lifetime."""
        return registry in self._no_referrers_api

    def list_referrers(self, ref: Reference, digest: str, artifact_type: str | None = None) -> Referrers:
        """Manifests that refer to ``digest``: referrers API, else the referrers tag schema."""
        check_digest(digest)
        params = {"artifactType": artifact_type} if artifact_type else None
        what = f"referrers of {ref.name}@{digest}"
        found: list[Descriptor] = []
        index: Manifest | None = None
        try:
            if ref.registry in self._no_referrers_api:
                raise NotFoundError(what)
            for body in self._paginate(ref, f"/v2/{ref.repository}/referrers/{digest}", params, what):
                manifests = body.get("manifests") or []
                if not isinstance(manifests, list):
                    raise RegistryProtocolError(f"{what}: 'manifests' is not a list")
                found.extend(Descriptor.from_json(m) for m in manifests)
            source: Literal["api", "tag-schema", "none"] = "api"
        except NotFoundError:
            # No referrers API: the fallback tag holds an index of referrers, if any.
            self._no_referrers_api.add(ref.registry)
            try:
                index = self.get_manifest(replace(ref, tag=referrers_tag(digest), digest=None))
            except NotFoundError:
                return Referrers((), "none")
            if index.media_type not in INDEX_TYPES:
                raise RegistryProtocolError(
                    f"referrers tag {referrers_tag(digest)} of {ref.name} is not an index"
                ) from None
            found = list(index.parsed.manifests)
            source = "tag-schema"
        if artifact_type:
            found = [d for d in found if d.artifact_type == artifact_type]
        return Referrers(tuple(found), source, index)

    def _paginate(
        self, ref: Reference, path: str, params: dict[str, str] | None, what: str
    ) -> Iterator[dict[str, object]]:
        url: str = path
        for _ in range(self.config.limits.max_pages):
            limit = self.config.limits.max_json_bytes
            response, data = read_with_retries(
                self._session, self._target(ref), url, what, limit, params=params, sleep=self._sleep
            )
            yield load_json_object(data, what)
            next_link = _next_link(response.headers.get("Link", ""))
            if not next_link:
                return
            url = urljoin(str(response.request.url), next_link)
            params = None  # the link carries its own query
        raise LimitExceededError(f"{what}: more than {self.config.limits.max_pages} pages")


def _content_type(response: httpx.Response) -> str | None:
    value = response.headers.get("Content-Type")
    return value.split(";", 1)[0].strip() if value else None


def _next_link(header: str) -> str | None:
    for part in header.split(","):
        if 'rel="next"' in part or "rel=next" in part:
            start, end = part.find("<"), part.find(">")
            if 0 <= start < end:
                return part[start + 1 : end]
    return None
