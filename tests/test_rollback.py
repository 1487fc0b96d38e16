"""Rollback protection (issue 12): import records the newest bundle creation time per target tag
and refuses an older, validly signed bundle (which ``--overwrite`` would otherwise let roll tags
back) before anything is pushed, unless ``--allow-downgrade``.

The registry tests export two bundles of one tag from real registries, an older one (image A,
created 2026-01-02) and a newer one (image B, 2026-03-04), and import them with the CLI; the
pure verdict and the state file's IO are tested directly below them.
"""

from __future__ import annotations

import datetime
import json
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME
from dtbundle.bundle.key import load_private_key, sign_catalog
from dtbundle.errors import CatalogError, NotFoundError, RollbackError, StateFileError
from dtbundle.export.requests import requests_from
from dtbundle.export.run import ExportSettings, run_export
from dtbundle.importer import state
from dtbundle.importer.state import ImportState, RollbackGuard, Target
from dtbundle.limits import STATE_FILE_MAX_BYTES
from dtbundle.oci import Platform, Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import read_entries, write_entries
from tests.support.cli import assert_clean_error, run_in_process
from tests.support.registries import make_client

OLD, NEW = "2026-01-02T03:04:05Z", "2026-03-04T05:06:07Z"


def _epoch(text: str) -> str:
    return str(int(state.parse_time(text).timestamp()))


@dataclass(frozen=True)
class Versions:
    """Two signed bundles of one source tag: ``old`` holds image ``old_digest``, ``new`` holds ``new_digest``."""

    source: Reference
    old: Path
    new: Path
    old_digest: str
    new_digest: str
    old_layer: str  # a blob only the old image has
    key: Path
    pub: Path


@pytest.fixture
def versions(
    plain_registry: RegistryServer, repo: str, keys_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Versions:
    source = Reference(plain_registry.address, repo, "1.0")
    built = {}
    with make_client(plain_registry, user=None) as client:
        for name, created in (("old", OLD), ("new", NEW)):
            layer = images.make_layer(f"{repo}-{name}", 900)
            built[name] = images.build_image(Platform("linux", "amd64"), [layer], label=name)
            images.push(client, source, built[name])  # the tag moves from the old image to the new one
            monkeypatch.setenv("SOURCE_DATE_EPOCH", _epoch(created))
            request = tuple(requests_from([str(source)]))
            run_export(
                client,
                ExportSettings(request, tmp_path / f"{name}.tar.zst", load_private_key(keys_dir / "dtbundle.key")),
            )
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    old_layer = built["old"].blobs[-1].descriptor.digest
    return Versions(
        source, tmp_path / "old.tar.zst", tmp_path / "new.tar.zst", built["old"].digest, built["new"].digest,
        old_layer, keys_dir / "dtbundle.key", keys_dir / "dtbundle.pub",
    )  # fmt: skip


def _import(v: Versions, bundle: Path, where: str, state_file: Path, *extra: str) -> tuple[int, str, str]:
    proc = run_in_process(
        "import", "--plain-http", "--public-key", str(v.pub), "--registry", where, "--state-file", str(state_file),
        "--overwrite", *extra, str(bundle),
    )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def _target(where: str, source: Reference) -> Reference:
    host, _, path = where.partition("/")
    return Reference(host, f"{path}/{source.repository}", source.tag)


def _tag_digest(server: RegistryServer, ref: Reference) -> str | None:
    with make_client(server, user=None) as client:
        try:
            return client.get_manifest(ref).digest
        except NotFoundError:
            return None


# -- against a real registry ---------------------------------------------------------------------------
def test_an_older_bundle_after_a_newer_one_is_refused_before_anything_moves(
    versions: Versions, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    where, state_file = f"{plain_registry.address}/rb", tmp_path / "state" / "imports.json"
    target = _target(where, versions.source)
    assert _import(versions, versions.new, where, state_file)[0] == 0
    assert _tag_digest(plain_registry, target) == versions.new_digest

    proc = run_in_process(
        "import", "--plain-http", "--public-key", str(versions.pub), "--registry", where, "--state-file",
        str(state_file), "--overwrite", str(versions.old),
    )  # fmt: skip
    line = assert_clean_error(proc, 3)
    name = f"{target.repository}:1.0"
    assert line == (
        f"dtbundle: error: bundle created {OLD} is older than the one imported to {plain_registry.address} for "
        f"{name} ({NEW}) (recorded in {state_file}): importing it would roll tags back to older images; "
        "pass --allow-downgrade to import it anyway"
    )
    # Nothing was pushed or tagged: the tag is the new image, the old image's manifest and blobs are not there.
    assert _tag_digest(plain_registry, target) == versions.new_digest
    assert _tag_digest(plain_registry, target.with_tag(None).with_digest(versions.old_digest)) is None
    with make_client(plain_registry, user=None) as client:
        assert client.blob_size(target.with_tag(None), versions.old_layer) is None
    # The same refusal as a --json error document.
    proc = run_in_process(
        "import", "--plain-http", "--json", "--public-key", str(versions.pub), "--registry", where,
        "--state-file", str(state_file), "--overwrite", str(versions.old),
    )  # fmt: skip
    assert proc.returncode == 3 and json.loads(proc.stdout)["error"]["kind"] == "RollbackError"


def test_allow_downgrade_imports_it_and_keeps_the_newest_time(
    versions: Versions, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    where, state_file = f"{plain_registry.address}/rbd", tmp_path / "imports.json"
    target = _target(where, versions.source)
    assert _import(versions, versions.new, where, state_file)[0] == 0
    code, _, err = _import(versions, versions.old, where, state_file, "--allow-downgrade")
    assert code == 0, err
    assert _tag_digest(plain_registry, target) == versions.old_digest
    # The floor does not drop: the old bundle is still refused without the flag, the new one still fine.
    assert _import(versions, versions.old, where, state_file)[0] == 3
    assert _import(versions, versions.new, where, state_file)[0] == 0
    assert _tag_digest(plain_registry, target) == versions.new_digest
    recorded = json.loads(state_file.read_text())["targets"][plain_registry.address]
    assert recorded == {f"{target.repository}:1.0": NEW}


def test_the_same_bundle_again_and_a_newer_one_are_imported(
    versions: Versions, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    where, state_file = f"{plain_registry.address}/rbs", tmp_path / "imports.json"
    for bundle in (versions.old, versions.old, versions.new, versions.new):
        code, _, err = _import(versions, bundle, where, state_file)
        assert code == 0, err
    assert _tag_digest(plain_registry, _target(where, versions.source)) == versions.new_digest
    assert stat.S_IMODE(state_file.stat().st_mode) == 0o600
    assert [p.name for p in state_file.parent.iterdir() if p.name.endswith(".tmp")] == []  # no temporary file left


def test_targets_are_independent_per_registry_and_repository(
    versions: Versions, plain_registry: RegistryServer, tls_registry: RegistryServer, tmp_path: Path
) -> None:
    state_file = tmp_path / "imports.json"
    assert _import(versions, versions.new, f"{plain_registry.address}/rbi", state_file)[0] == 0
    # Another repository path of the same registry has no record: the old bundle is fine there.
    code, _, err = _import(versions, versions.old, f"{plain_registry.address}/rbi-other", state_file)
    assert code == 0, err
    # Another registry (same repository path) has none either.
    proc = run_in_process(
        "import", "--ca-cert", str(tls_registry.ca_cert), "--public-key", str(versions.pub), "--registry",
        f"{tls_registry.address}/rbi", "--state-file", str(state_file), str(versions.old),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    recorded = json.loads(state_file.read_text())["targets"]
    assert set(recorded) == {plain_registry.address, tls_registry.address}
    assert list(recorded[tls_registry.address].values()) == [OLD]


def test_oci_layouts_are_keyed_by_their_absolute_directory(
    versions: Versions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    state_file = tmp_path / "imports.json"
    base = ("import", "--public-key", str(versions.pub), "--state-file", str(state_file), "--overwrite")
    assert run_in_process(*base, "--to-oci", "layout", str(versions.new)).returncode == 0
    refused = run_in_process(*base, "--to-oci", str(tmp_path / "layout"), str(versions.old))  # the same directory
    assert f"the OCI layout {tmp_path / 'layout'} for {versions.source}" in assert_clean_error(refused, 3)
    assert run_in_process(*base, "--to-oci", "other", str(versions.old)).returncode == 0
    assert set(json.loads(state_file.read_text())["targets"]) == {
        f"oci:{tmp_path / 'layout'}",
        f"oci:{tmp_path / 'other'}",
    }


CORRUPT = (
    b'{"version": 1, "targets": {',  # truncated
    b"\xff\xfe",  # not UTF-8
    b'{"version": 99, "targets": {}}',  # not our version
    b'{"version": 1, "targets": {"reg": {"r:1": "yesterday"}}}',  # not a time
    b'{"version": 1, "targets": {"reg": {"r:1\\u001b[2K": "2026-01-02T03:04:05Z"}}}',  # a terminal escape
    b"[" * 100_000,  # nested too deeply
)


def test_a_corrupt_state_file_is_a_clean_error_and_nothing_is_pushed(
    versions: Versions, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    where = f"{plain_registry.address}/rbc"
    for content in CORRUPT:
        state_file = tmp_path / "imports.json"
        state_file.write_bytes(content)
        code, _, err = _import(versions, versions.new, where, state_file)
        assert code == 1 and "Traceback" not in err, err
        assert f"the import state file {state_file} is unusable" in err and "restore it from a backup" in err
        assert state_file.read_bytes() == content  # never silently replaced
    assert _tag_digest(plain_registry, _target(where, versions.source)) is None
    directory = tmp_path / "a-directory"
    directory.mkdir()
    code, _, err = _import(versions, versions.new, where, directory)
    assert code in (1, 2) and "Traceback" not in err  # typer refuses a directory (2) before we would (1)


def test_dry_run_checks_but_records_nothing(versions: Versions, plain_registry: RegistryServer, tmp_path: Path) -> None:
    where, state_file = f"{plain_registry.address}/rbn", tmp_path / "imports.json"
    assert _import(versions, versions.new, where, state_file, "--dry-run")[0] == 0
    assert not state_file.exists() and not state_file.with_name("imports.json.lock").exists()
    assert _import(versions, versions.old, where, state_file)[0] == 0  # nothing was recorded by the dry run
    assert _import(versions, versions.new, where, state_file)[0] == 0
    recorded = state_file.read_bytes()
    code, _, err = _import(versions, versions.old, where, state_file, "--dry-run")
    assert code == 3 and "--allow-downgrade" in err  # the dry run says what the import would do
    assert _import(versions, versions.new, where, state_file, "--dry-run")[0] == 0
    assert state_file.read_bytes() == recorded


def test_an_unverified_bundle_is_checked_but_never_recorded(
    versions: Versions, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    where, state_file = f"{plain_registry.address}/rbu", tmp_path / "imports.json"
    insecure = ("import", "--plain-http", "--insecure-skip-verify", "--registry", where, "--state-file",
                str(state_file), "--overwrite")  # fmt: skip
    proc = run_in_process(*insecure, "--json", str(versions.new))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["stateRecorded"] is False and "checked against the rollback records" in proc.stderr
    assert not state_file.exists()
    assert _import(versions, versions.new, where, state_file)[0] == 0  # verified: recorded
    refused = run_in_process(*insecure, str(versions.old))
    assert refused.returncode == 3 and "is older than" in refused.stderr


def test_a_signed_catalog_whose_time_does_not_parse_is_refused(
    versions: Versions, plain_registry: RegistryServer, tmp_path: Path
) -> None:
    entries = read_entries(versions.new)
    catalog = json.loads(dict(entries)[CATALOG_NAME])
    catalog["created"] = "2026-03-04 05:06:07"
    data = json.dumps(catalog).encode()
    signature = sign_catalog(load_private_key(versions.key), data)
    hostile = tmp_path / "hostile.tar.zst"
    write_entries(
        hostile, [(n, data if n == CATALOG_NAME else signature if n == SIGNATURE_NAME else d) for n, d in entries]
    )
    where = f"{plain_registry.address}/rbh"
    code, _, err = _import(versions, hostile, where, tmp_path / "imports.json")
    assert code == 3 and "YYYY-MM-DDTHH:MM:SSZ" in err, err
    assert _tag_digest(plain_registry, _target(where, versions.source)) is None


# -- the pure verdict ----------------------------------------------------------------------------------
T_OLD, T_NEW = state.parse_time(OLD), state.parse_time(NEW)
OPERATOR = Target("reg.corp", "dynatrace/operator:v1.4.0")
AGENT = Target("reg.corp", "dynatrace/oneagent:1.305")
ELSEWHERE = Target("reg.other:5000", "dynatrace/operator:v1.4.0")


def test_the_verdict() -> None:
    recorded = ImportState({OPERATOR: T_NEW})
    assert state.check(recorded, T_OLD, {OPERATOR, AGENT}) == [state.Downgrade(OPERATOR, T_NEW)]
    assert state.check(recorded, T_NEW, {OPERATOR}) == []  # equal: the same bundle again
    assert state.check(recorded, T_NEW + datetime.timedelta(seconds=1), {OPERATOR}) == []
    assert state.check(recorded, T_OLD, {AGENT, ELSEWHERE}) == []  # other tags, other registries
    assert state.check(ImportState(), T_OLD, {OPERATOR}) == []


def test_recording_keeps_the_newest_time() -> None:
    after = state.record(ImportState({OPERATOR: T_NEW}), T_OLD, {OPERATOR, AGENT})
    assert after.records == {OPERATOR: T_NEW, AGENT: T_OLD}
    assert state.record(after, T_NEW, {AGENT}).records == {OPERATOR: T_NEW, AGENT: T_NEW}
    assert state.from_json(state.to_json(after)) == after


def test_the_refusal_names_both_times_and_the_images() -> None:
    error = state.refusal(T_OLD, [state.Downgrade(OPERATOR, T_NEW), state.Downgrade(AGENT, T_OLD)])
    assert isinstance(error, RollbackError) and error.exit_code == 3
    assert str(error) == (
        f"bundle created {OLD} is older than the one imported to reg.corp for dynatrace/operator:v1.4.0 ({NEW}) "
        f"(and 1 more image, newest {NEW}): importing it would roll tags back to older images; "
        "pass --allow-downgrade to import it anyway"
    )


def test_targets_and_times() -> None:
    refs = [Reference("reg.corp", "a", "1"), Reference("reg.corp", "b", None, "sha256:" + "0" * 64)]
    assert state.registry_targets(refs) == {Target("reg.corp", "a:1")}  # a digest-only image moves no tag
    assert state.layout_targets(Path("rel"), ["x:1"]) == {Target(f"oci:{Path.cwd() / 'rel'}", "x:1")}
    for bad in ("2026-03-04T05:06:07+00:00", "2026-03-04", "2026\r\x1b[1A", "2026-13-04T05:06:07Z"):
        with pytest.raises(CatalogError):
            state.bundle_created(bad)
    assert state.format_time(state.bundle_created(NEW)) == NEW


def test_the_default_path_follows_xdg() -> None:
    assert state.default_state_path({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/dtbundle/imports.json")
    home = Path("/h/.local/state/dtbundle/imports.json")
    assert state.default_state_path({"XDG_STATE_HOME": "relative", "HOME": "/h"}) == home  # relative: ignored
    assert state.default_state_path({"HOME": "/h"}) == home
    assert str(state.default_state_path()).startswith(os.environ["XDG_STATE_HOME"])  # tests never use the real home


# -- the state file: IO, locking ------------------------------------------------------------------------
def test_load_is_bounded_and_save_is_private(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "imports.json"
    assert state.load_state(path) == ImportState()
    state.save_state(path, ImportState({OPERATOR: T_NEW}))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and state.load_state(path).records == {OPERATOR: T_NEW}
    path.write_bytes(b" " * (STATE_FILE_MAX_BYTES + 1))
    with pytest.raises(StateFileError, match="larger than"):
        state.load_state(path)


def test_a_newer_import_that_finished_meanwhile_is_seen_when_publishing(tmp_path: Path) -> None:
    path = tmp_path / "imports.json"
    old = RollbackGuard(path, T_OLD, frozenset({OPERATOR}))
    old.check()  # nothing recorded yet: the old import starts streaming
    with RollbackGuard(path, T_NEW, frozenset({OPERATOR})).publishing():
        pass  # meanwhile the new one finishes
    with pytest.raises(RollbackError), old.publishing():
        raise AssertionError("must not publish")
    assert state.load_state(path).records == {OPERATOR: T_NEW}


def test_concurrent_imports_do_not_lose_records(tmp_path: Path) -> None:
    path = tmp_path / "imports.json"
    first_holds, waited = threading.Event(), threading.Event()
    release = threading.Event()

    def first() -> None:
        with RollbackGuard(path, T_OLD, frozenset({OPERATOR})).publishing():
            first_holds.set()
            release.wait(10)

    thread = threading.Thread(target=first)
    thread.start()
    assert first_holds.wait(10)
    second = threading.Thread(target=lambda: _publish(path, waited))
    second.start()
    assert waited.wait(10)  # the second import waits for the lock instead of reading a stale state
    release.set()
    thread.join(10)
    second.join(10)
    assert state.load_state(path).records == {OPERATOR: T_OLD, AGENT: T_NEW}


def _publish(path: Path, waited: threading.Event) -> None:
    with RollbackGuard(path, T_NEW, frozenset({AGENT})).publishing(waited.set):
        pass
