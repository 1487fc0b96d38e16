"""Image references parse and normalise as the Docker and containerd tools do."""

from __future__ import annotations

import pytest

from dtbundle.errors import InvalidReferenceError, UsageError
from dtbundle.oci.reference import Reference, parse_reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("busybox", Reference("docker.io", "library/busybox", "latest")),
        (
            "dynatrace/dynatrace-operator:v1.4.0",
            Reference("docker.io", "dynatrace/dynatrace-operator", "v1.4.0"),
        ),
        ("index.docker.io/library/alpine:3", Reference("docker.io", "library/alpine", "3")),
        ("docker.io/alpine", Reference("docker.io", "library/alpine", "latest")),
        (
            "public.ecr.aws/dynatrace/dynatrace-operator:v1.4.0",
            Reference("public.ecr.aws", "dynatrace/dynatrace-operator", "v1.4.0"),
        ),
        ("localhost/app", Reference("localhost", "app", "latest")),
        ("localhost:5000/team/app:1.0", Reference("localhost:5000", "team/app", "1.0")),
        ("127.0.0.1:5000/a/b/c:x", Reference("127.0.0.1:5000", "a/b/c", "x")),
        (f"registry.example.com/app@{D}", Reference("registry.example.com", "app", None, D)),
        (f"registry.example.com/app:1.2@{D}", Reference("registry.example.com", "app", "1.2", D)),
        ("[::1]:5000/app:1", Reference("[::1]:5000", "app", "1")),
        ("Registry.Example.com/app", Reference("Registry.Example.com", "app", "latest")),
        ("r.io/a__b/c-d--e.f:T_1.0-x", Reference("r.io", "a__b/c-d--e.f", "T_1.0-x")),
    ],
)
def test_parse_normalises_like_docker(text: str, expected: Reference) -> None:
    assert parse_reference(text) == expected


def test_str_round_trips_the_canonical_form() -> None:
    assert str(parse_reference("alpine")) == "docker.io/library/alpine:latest"
    ref = parse_reference(f"r.io:443/x/y:1@{D}")
    assert str(ref) == f"r.io:443/x/y:1@{D}"
    assert parse_reference(str(ref)) == ref


def test_docker_hub_talks_to_its_api_host() -> None:
    assert parse_reference("alpine").api_host == "registry-1.docker.io"
    assert parse_reference("quay.io/a/b").api_host == "quay.io"


def test_identifier_prefers_digest_over_tag() -> None:
    assert parse_reference(f"r.io/a:1@{D}").identifier == D
    assert parse_reference("r.io/a:1").identifier == "1"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("r.io/Team/app", "lowercase"),
        ("docker.io/Team/app", "lowercase"),
        ("r.io/app:", "invalid tag"),
        ("r.io/app:v1.\u00e9", "invalid tag"),  # the grammar's \w is ASCII: no letters beyond it
        ("r.io/app:-bad", "invalid tag"),
        ("r.io/app@sha256:abc", "malformed digest"),
        ("r.io/app@md5:" + "a" * 32, "unsupported digest algorithm"),
        ("r.io/app@sha256:" + "A" * 64, "lower-case hex"),
        ("r.io//app", "invalid repository path component"),
        ("r.io/app_", "invalid repository path component"),
        ("-bad.io/app", "invalid registry host"),
        ("r.io/" + "a" * 260, "longer than 255"),
        ("r.io/app:" + "t" * 129, "invalid tag"),
    ],
)
def test_invalid_references_get_a_clear_usage_error(text: str, why: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_reference(text)
    assert why in str(info.value)
    assert isinstance(info.value, UsageError) and info.value.exit_code == 2
    assert "\n" not in str(info.value)
