"""Image references: parse and normalise them as the Docker and containerd tools do.

The grammar is the one of distribution's ``reference`` package::

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [domain "/"] path-component ["/" path-component]*
    domain     := host [":" port]

A first component counts as a registry host only if it contains ``.`` or ``:``,
is ``localhost``, or has upper-case letters; otherwise the registry is
``docker.io``, and a single-component Docker Hub name gets ``library/``.
Parsing is pure: no network, no file system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dtbundle.errors import InvalidReferenceError
from dtbundle.limits import REFERENCE_NAME_MAX_LENGTH
from dtbundle.oci.digest import ALGORITHM_HEX_LENGTHS, is_digest

DOCKER_HUB = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = re.compile(rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})(?::[0-9]+)?")
TAG_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")  # Go's \w is ASCII-only


@dataclass(frozen=True)
class Reference:
    """A normalised image reference. ``tag`` and ``digest`` may both be set."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def api_host(self) -> str:
        """The host to send distribution API requests to (Docker Hub's differs)."""
        return DOCKER_HUB_API_HOST if self.registry == DOCKER_HUB else self.registry

    @property
    def identifier(self) -> str:
        """What to put after ``/manifests/``: the digest when known, else the tag."""
        if self.digest:
            return self.digest
        return self.tag or "latest"

    def with_digest(self, digest: str) -> Reference:
        return Reference(self.registry, self.repository, self.tag, digest)

    def with_tag(self, tag: str | None) -> Reference:
        return Reference(self.registry, self.repository, tag, self.digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def split_registry(name: str) -> tuple[str, str]:
    """Split a name into (registry, remainder) the way the Docker CLI does."""
    first, sep, rest = name.partition("/")
    if not sep or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        return DOCKER_HUB, name
    return first, rest


def is_valid_host(host: str) -> bool:
    """``host[:port]`` as the reference grammar allows it."""
    return _DOMAIN.fullmatch(host) is not None


def is_valid_tag(tag: str) -> bool:
    """A tag as the reference grammar allows it."""
    return TAG_PATTERN.fullmatch(tag) is not None


def is_valid_path(path: str) -> bool:
    """Repository path components (``a/b-c/d_e``), lower case."""
    return bool(path) and all(_PATH_COMPONENT.fullmatch(c) for c in path.split("/"))


def looks_like_host(component: str) -> bool:
    """Whether the first component of a name is a registry host (Docker's rule)."""
    return any(c in component for c in ".:") or component == "localhost" or component.lower() != component


def normalize_registry(host: str) -> str:
    """Docker Hub's several names become ``docker.io``; other hosts are kept."""
    return DOCKER_HUB if host.lower() in _HUB_ALIASES else host


def parse_reference(text: str, *, default_tag: str | None = "latest") -> Reference:
    """Parse ``text`` into a :class:`Reference`, or raise InvalidReferenceError.

    Without tag or digest, ``default_tag`` is used (``None`` keeps it unset).
    """
    original = text
    text = text.strip()
    if not text:
        raise InvalidReferenceError("empty image reference; give one like registry.example.com/team/app:1.0")

    def fail(why: str) -> InvalidReferenceError:
        return InvalidReferenceError(
            f"invalid image reference {original!r}: {why} "
            "(expected [registry[:port]/]repository[:tag][@sha256:<64 hex>])"
        )

    digest: str | None = None
    if "@" in text:
        text, _, digest = text.partition("@")
        algorithm, sep, encoded = digest.partition(":")
        if not sep or not algorithm or not encoded.isalnum():
            raise fail("malformed digest")
        expected = ALGORITHM_HEX_LENGTHS.get(algorithm)
        if expected is None:
            raise fail(f"unsupported digest algorithm {algorithm[:20]!r} (use sha256 or sha512)")
        if not is_digest(digest):
            raise fail(f"malformed digest: a {algorithm} digest is {expected} lower-case hex characters")

    tag: str | None = None
    # A ':' after the last '/' separates the tag; one before it is a port.
    last_slash = text.rfind("/")
    colon = text.rfind(":")
    if colon > last_slash:
        text, tag = text[:colon], text[colon + 1 :]
        if not is_valid_tag(tag):
            raise fail(f"invalid tag {tag!r}")

    if not text:
        raise fail("missing repository name")
    registry, path = split_registry(text)
    if registry != DOCKER_HUB and not _DOMAIN.fullmatch(registry):
        raise fail(f"invalid registry host {registry!r}")
    registry = normalize_registry(registry)
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if path.lower() != path:
        raise fail("repository name must be lowercase")
    for component in path.split("/"):
        if not _PATH_COMPONENT.fullmatch(component):
            raise fail(f"invalid repository path component {component!r}")
    if len(f"{registry}/{path}") > REFERENCE_NAME_MAX_LENGTH:
        raise fail(f"name longer than {REFERENCE_NAME_MAX_LENGTH} characters")
    if tag is None and digest is None:
        tag = default_tag
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
