"""Errors that say what to do: missing references name the nearest tags, a transport mismatch
says which flag to change, a --map rule that matches nothing is refused, and secrets are asked
for at a terminal (hidden) instead of failing."""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest

from dtbundle.bundle.key import generate_keys, load_public_key
from dtbundle.bundle.reader import open_bundle
from dtbundle.discovery import tag_hint
from dtbundle.errors import NotFoundError, RegistryConnectionError, UsageError
from dtbundle.importer.mapping import RepositoryMapper
from dtbundle.importer.plan import place
from dtbundle.oci import Platform, Reference, referrers_tag
from dtbundle.registry import CredentialResolver, RegistryClient
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.cli import assert_clean_error, cli_env, run_in_process
from tests.support.registries import PASSWORD, USER, Exported, fast_config, make_client, sample

TAGS = ("v1.3.2", "v1.4.0", "v1.4.1", "v2.0.0", "latest")


def _push_tagged(server: RegistryServer, repository: str, tags: Sequence[str]) -> images.BuiltManifest:
    """One small image under every tag of ``tags`` (plus a cosign-style signature tag)."""
    built = images.build_image(Platform("linux", "amd64"), [images.make_layer(repository, 256)])
    with make_client(server, user=USER if server.auth != "none" else None) as client:
        for tag in tags:
            images.push(client, Reference(server.address, repository, tag), built)
        images.push(client, Reference(server.address, repository, referrers_tag(built.digest) + ".sig"), built)
    return built


# -- 1. a reference that does not exist -----------------------------------------------------------------
def test_a_missing_tag_names_the_nearest_tags(plain_registry: RegistryServer, repo: str, tmp_path: Path) -> None:
    _push_tagged(plain_registry, repo, TAGS)
    ref = f"{plain_registry.address}/{repo}:v1.4"
    expected = f"dtbundle: error: {ref} does not exist; tags nearby: v1.4.0, v1.4.1, v1.3.2"
    assert assert_clean_error(run_in_process("resolve", "--plain-http", ref), 2) == expected
    # export fails the same way while planning, before a bundle exists
    key = tmp_path / "keys"
    generate_keys(key)
    out = tmp_path / "b.tar.zst"
    proc = run_in_process("export", "--plain-http", "--signing-key", str(key / "dtbundle.key"), "-o", str(out), ref)
    assert assert_clean_error(proc, 2) == expected
    assert not out.exists()


def test_a_missing_digest_names_the_newest_tags(plain_registry: RegistryServer, repo: str) -> None:
    _push_tagged(plain_registry, repo, TAGS)
    ref = f"{plain_registry.address}/{repo}@sha256:{'0' * 64}"
    line = assert_clean_error(run_in_process("resolve", "--plain-http", ref), 2)
    assert line == f"dtbundle: error: {ref} does not exist; newest tags: v2.0.0, v1.4.1, v1.4.0"


def test_a_missing_repository_says_so(plain_registry: RegistryServer, repo: str) -> None:
    ref = f"{plain_registry.address}/{repo}/nothing:1.0"
    line = assert_clean_error(run_in_process("resolve", "--plain-http", ref), 2)
    assert line == (
        f"dtbundle: error: {ref} does not exist: registry {plain_registry.address} has no repository "
        f"{repo}/nothing; check the repository name"
    )


@pytest.mark.parametrize(
    ("wanted", "tags", "hint"),
    [
        ("v1.4", TAGS, "tags nearby: v1.4.0, v1.4.1, v1.3.2"),
        ("1.305.57", ["1.305.57.20250115-123456", "1.303.62.20250101-090000"], "tags nearby: 1.305.57.20250115-123456"),
        ("nightly", ["v1.9.0", "v1.10.0", "latest"], "newest tags: v1.10.0, v1.9.0"),
        (None, ["latest", "stable"], "newest tags: stable, latest"),
        ("v1", [f"sha256-{'a' * 64}.sig", f"sha256-{'b' * 64}"], "the repository has no tags"),
    ],
)
def test_tag_hints(wanted: str | None, tags: Sequence[str], hint: str) -> None:
    assert tag_hint(wanted, tags) == hint


# -- 2. plain HTTP against TLS, and the reverse ----------------------------------------------------------
def test_plain_http_against_a_tls_registry_says_to_drop_it(tls_registry: RegistryServer, repo: str) -> None:
    line = assert_clean_error(run_in_process("resolve", "--plain-http", f"{tls_registry.address}/{repo}:1"), 1)
    assert f"registry {tls_registry.address} speaks HTTPS, not plain HTTP: drop --plain-http" in line
    assert "HTTP 400" not in line


def test_https_against_a_plain_registry_says_to_pass_plain_http(plain_registry: RegistryServer, repo: str) -> None:
    sleeps: list[float] = []
    config = fast_config(loopback_plain_http_fallback=False)
    client = RegistryClient(config, CredentialResolver({}, use_config_files=False), sleep=sleeps.append)
    with client, pytest.raises(RegistryConnectionError) as info:
        client.get_manifest(Reference(plain_registry.address, repo, "1"))
    assert "the registry does not speak TLS (it answers plain HTTP); pass --plain-http" in str(info.value)
    assert sleeps == [], "a registry without TLS does not grow it on a retry"


# -- 3. a --map rule that matches no image ---------------------------------------------------------------
def test_a_map_rule_that_matches_nothing_is_refused_before_any_push(
    exported: Exported, plain_registry: RegistryServer
) -> None:
    where = f"{plain_registry.address}/t/{uuid.uuid4().hex[:12]}"
    source = sample(exported.images, "operator").ref
    good, bad = f"{source.registry}/samples={where}", f"docker.io/dynatrace={where}"
    args = ["import", "--plain-http", "--public-key", str(exported.pub), "--registry", where]
    line = assert_clean_error(run_in_process(*args, "--map", good, "--map", bad, str(exported.path)), 2)
    assert line == (
        f"dtbundle: error: --map {bad}: matches no image in the bundle, whose images come from "
        f"{source.registry}/samples; start SRC_PREFIX with one of these"
    )
    # The good rule would have put the operator here: nothing was pushed.
    with make_client(plain_registry, user=None) as client, pytest.raises(NotFoundError):
        client.list_tags(Reference(plain_registry.address, f"{where.split('/', 1)[1]}/operator"))


def test_placement_refuses_an_unmatched_rule(exported: Exported) -> None:
    """``dtbundle dynakube`` places a bundle through the same function."""
    with open_bundle(exported.path, [load_public_key(exported.pub)]) as bundle:
        catalog = bundle.catalog
    with pytest.raises(UsageError, match=r"--map public\.ecr\.aws/dynatrace=reg\.example: matches no image"):
        place(catalog, RepositoryMapper("reg.example", ["public.ecr.aws/dynatrace=reg.example"]))
    place(catalog, RepositoryMapper("reg.example", [f"{exported.images[0].ref.registry}=reg.example"]))


# -- 4. hidden prompts at a terminal ---------------------------------------------------------------------
# The child makes the pseudo-terminal its controlling terminal, as a login shell's would be, so
# getpass talks to /dev/tty exactly as for a user.
_AT_TERMINAL = (
    "import fcntl, os, sys, termios\n"
    "fcntl.ioctl(0, termios.TIOCSCTTY, 0)\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'dtbundle', *sys.argv[1:]])\n"
)


def run_at_terminal(args: Sequence[str], answers: Sequence[tuple[str, str]], timeout: float = 90) -> tuple[int, str]:
    """``dtbundle ARGS`` on a pseudo-terminal; type each answer when its prompt appears.

    Returns the exit status and everything the terminal showed.
    """
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-c", _AT_TERMINAL, *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=cli_env({"TERM": "dumb", "COLUMNS": "200"}),
        start_new_session=True,
    )
    os.close(slave)
    shown, answered, pending = b"", 0, list(answers)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if time.monotonic() > deadline:
                pytest.fail(f"dtbundle did not finish at the terminal within {timeout} s; it showed: {shown!r}")
            ready, _, _ = select.select([master], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: every process closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            if pending and pending[0][0].encode() in shown[answered:]:
                os.write(master, pending.pop(0)[1].encode() + b"\n")
                answered = len(shown)
        status = proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert not pending, f"dtbundle never asked {pending[0][0]!r}; it showed: {shown!r}"
    return status, shown.decode("utf-8", "replace")


def test_the_password_is_asked_for_at_a_terminal(
    basic_registry: RegistryServer, keys_dir: Path, repo: str, tmp_path: Path
) -> None:
    built = _push_tagged(basic_registry, repo, ["1.0"])
    out = tmp_path / "b.tar.zst"
    args = ["export", "-q", "--plain-http", "--username", USER, "--signing-key", str(keys_dir / "dtbundle.key")]
    prompt = f"Password for {USER} at {basic_registry.address}: "
    status, shown = run_at_terminal(
        [*args, "-o", str(out), f"{basic_registry.address}/{repo}:1.0"], [(prompt, PASSWORD)]
    )
    assert status == 0, shown
    assert out.exists() and PASSWORD not in shown  # exported, and the typed password was not echoed
    assert built.digest in run_in_process("inspect", "--json", str(out)).stdout


def test_without_a_terminal_a_password_is_still_required(basic_registry: RegistryServer, repo: str) -> None:
    proc = run_in_process("resolve", "--plain-http", "--username", USER, f"{basic_registry.address}/{repo}:1")
    assert "--username needs a password: use --password-stdin or set DTBUNDLE_PASSWORD" in assert_clean_error(proc, 2)


def test_the_key_passphrase_is_asked_for_at_a_terminal(
    plain_registry: RegistryServer, seeded: list[images.SampleImage], tmp_path: Path
) -> None:
    passphrase = "typed-not-echoed-4711"
    keys = generate_keys(tmp_path / "keys", passphrase=passphrase)
    tool = sample(seeded, "tool")
    out = tmp_path / "b.tar.zst"
    args = ["export", "-q", "--plain-http", "--signing-key", str(keys.private_path), "-o", str(out), str(tool.ref)]
    status, shown = run_at_terminal(args, [(f"Passphrase for signing key {keys.private_path}: ", passphrase)])
    assert status == 0, shown
    assert passphrase not in shown
    assert run_in_process("verify", "--public-key", str(keys.public_path), str(out)).returncode == 0
    # a wrong passphrase typed is a usage error that says so
    status, shown = run_at_terminal([*args, "--force"], [("Passphrase for signing key", "wrong")])
    assert status == 2 and "the passphrase typed is wrong" in shown and "Traceback" not in shown
    # without a terminal, the variable is still the way
    line = assert_clean_error(run_in_process(*args, "--force"), 2)
    assert "is encrypted; set DTBUNDLE_KEY_PASSPHRASE" in line


def test_the_password_is_obtained_once_however_many_clients_a_command_builds(monkeypatch: pytest.MonkeyPatch) -> None:
    """export --latest lists tags with one client and exports with another: stdin is read once."""
    import io

    from dtbundle.cli.options import RegistryAccess

    monkeypatch.setattr("sys.stdin", io.StringIO("s3cret\n"))
    access = RegistryAccess(username="alice", password_stdin=True)
    asked: list[str] = []
    first = access.explicit_credentials({"reg.example.com"}, prompt=lambda text: asked.append(text) or None)
    second = access.explicit_credentials({"reg.example.com"}, prompt=lambda text: asked.append(text) or None)
    assert first == second and first["reg.example.com"].password == "s3cret" and asked == []
