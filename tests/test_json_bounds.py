"""JSON dtbundle did not write is measured before it is parsed: a hostile catalog, signature file or
manifest is refused as an integrity failure (exit 3, one line) instead of taking gigabytes of
memory or the interpreter's stack, and the memory of ``inspect``/``verify`` stays bounded."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from dtbundle import jsontext, oci
from dtbundle.bundle.format import CATALOG_NAME, SIGNATURE_NAME
from dtbundle.bundle.key import generate_keys, load_private_key, sign_catalog
from dtbundle.errors import RegistryProtocolError
from dtbundle.limits import BUNDLE, REGISTRY, JsonLimits, MiB
from dtbundle.oci import Reference
from dtbundle.registry import CredentialResolver, RegistryClient
from tests.support.bundles import write_entries
from tests.support.cli import assert_clean_error, cli_env, run_in_process
from tests.support.registries import registry_config

EMPTY_OBJECTS = 20_000_000  # the bundle: 60 MB of catalog, 1.5 GB of dicts once parsed
PEAK_RSS_BOUND = 320 * MiB  # measured ~170 MB with the bounds, ~1.6 GB without


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("json-bounds-keys")
    generate_keys(directory)
    return directory


def _signed_bundle(path: Path, keys: Path, catalog: bytes, signature: bytes | None = None) -> Path:
    """A bundle whose catalog is validly signed by the trusted key: the bounds hold whatever the signature says."""
    signature = signature if signature is not None else sign_catalog(load_private_key(keys / "dtbundle.key"), catalog)
    write_entries(path, [(CATALOG_NAME, catalog), (SIGNATURE_NAME, signature)])
    return path


def _inspect_and_verify(bundle: Path, keys: Path) -> list[str]:
    inspect = assert_clean_error(run_in_process("inspect", str(bundle)), 3)
    verify = assert_clean_error(run_in_process("verify", "--public-key", str(keys / "dtbundle.pub"), str(bundle)), 3)
    return [inspect, verify]


# -- jsontext.loads ------------------------------------------------------------------------------------
def test_nesting_up_to_the_limit_parses_and_one_more_level_is_refused() -> None:
    limits = JsonLimits(max_depth=8)
    assert jsontext.loads("[" * 8 + "]" * 8, limits) == json.loads("[" * 8 + "]" * 8)
    assert jsontext.loads('{"a":' * 7 + "[]" + "}" * 7, limits)
    with pytest.raises(ValueError, match="more than 8 levels deep"):
        jsontext.loads('{"a":' * 8 + "[]" + "}" * 8, limits)


def test_the_parsers_own_limit_is_never_reached() -> None:
    """100 000 levels would be a RecursionError in json.loads: here a ValueError, before parsing."""
    deep = b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(ValueError, match="elements"):
        jsontext.loads(deep)  # the default density bound comes first
    with pytest.raises(ValueError, match="more than 64 levels deep"):
        jsontext.loads(deep, JsonLimits(max_elements_per_kib=1024))


def test_brackets_commas_and_escaped_quotes_inside_strings_do_not_count() -> None:
    limits = JsonLimits(max_depth=2, max_elements=5)
    text = json.dumps({"a": ['[[[{{{,,,,,\\"]]]' * 50, "\\", '"[[[['], "b": ']]]\\\\"[['})
    assert jsontext.loads(text, limits) == json.loads(text)
    assert jsontext.loads(text.encode("utf-16"), limits) == json.loads(text)  # measured as UTF-8


def test_too_many_elements_are_refused_by_count_and_by_density() -> None:
    with pytest.raises(ValueError, match="more than 10 elements"):
        jsontext.loads("[" + "1," * 10 + "1]", JsonLimits(max_elements=10))
    dense = JsonLimits(max_elements_per_kib=16)  # one element per 64 bytes on average
    sparse = json.dumps(["x" * 60] * 40)  # 2.5 KiB, 40 elements: within 3 started KiB x 16
    assert len(jsontext.loads(sparse, dense)) == 40
    with pytest.raises(ValueError, match="16 per KiB"):
        jsontext.loads("[" + "{}," * 300 + "{}]", dense)


def test_size_is_refused_when_a_bound_is_given() -> None:
    with pytest.raises(ValueError, match="above the limit of 10"):
        jsontext.loads(b'"0123456789"', JsonLimits(max_bytes=10))


def test_the_spec_quotes_the_default_json_limits() -> None:
    spec = (Path(__file__).resolve().parents[1] / "specs" / "bundle-format.md").read_text(encoding="utf-8")
    quoted = re.search(r"`JsonLimits\(\)`: depth (\d+), (\d+) elements, (\d+) per KiB", spec)
    assert quoted is not None
    default = JsonLimits()
    assert tuple(map(int, quoted.groups())) == (default.max_depth, default.max_elements, default.max_elements_per_kib)


# -- catalog and signature file: exit 3, one line, before anything else --------------------------------
def test_a_catalog_of_twenty_million_empty_objects_is_refused(keys: Path, tmp_path: Path) -> None:
    catalog = b"[" + b"{}," * (EMPTY_OBJECTS - 1) + b"{}]"
    assert len(catalog) < BUNDLE.max_catalog_bytes
    for line in _inspect_and_verify(_signed_bundle(tmp_path / "empty.tar.zst", keys, catalog), keys):
        assert "elements" in line and "catalog" in line


def test_a_deeply_nested_signed_catalog_is_refused(keys: Path, tmp_path: Path) -> None:
    levels = BUNDLE.max_json_depth  # with the catalog object and "extensions": two more than allowed
    deep = b'{"formatVersion": 1, "extensions": {"x": ' + b"[" * levels + b"]" * levels + b"}}"
    for line in _inspect_and_verify(_signed_bundle(tmp_path / "deep.tar.zst", keys, deep), keys):
        assert f"more than {BUNDLE.max_json_depth} levels deep" in line


def test_a_signature_file_beyond_the_bounds_is_refused_before_the_catalog(keys: Path, tmp_path: Path) -> None:
    catalog = b"[" + b"{}," * 1_000_000 + b"{}]"  # would be refused too, but is never parsed
    for name, signature in {"deep": b"[" * 1000 + b"]" * 1000, "dense": b"[" + b"0," * 20_000 + b"0]"}.items():
        bundle = _signed_bundle(tmp_path / f"{name}.tar.zst", keys, catalog, signature)
        line = assert_clean_error(run_in_process("verify", "--public-key", str(keys / "dtbundle.pub"), str(bundle)), 3)
        assert "signature file is malformed" in line


# -- manifests from a registry ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "body", [b"[" * 70 + b"]" * 70, b'{"manifests":[' + b"{}," * 1_000_000 + b"{}]}"], ids=["deep", "elements"]
)
def test_a_manifest_beyond_the_bounds_is_refused_cleanly(body: bytes) -> None:
    assert len(body) <= REGISTRY.max_manifest_bytes
    transport = httpx.MockTransport(
        lambda _: httpx.Response(200, content=body, headers={"Content-Type": oci.OCI_INDEX})
    )
    client = RegistryClient(registry_config(), CredentialResolver({}, use_config_files=False), transport=transport)
    with client, pytest.raises(RegistryProtocolError, match="not valid JSON: JSON"):
        client.get_manifest(Reference("registry.test", "team/app", "1.0"))


# -- memory --------------------------------------------------------------------------------------------------
PEAK_RSS = """
import resource, subprocess, sys
subprocess.run([sys.executable, "-m", "dtbundle", *sys.argv[1:]], capture_output=True, check=False)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def test_inspect_and_verify_of_the_hostile_catalog_stay_within_a_memory_bound(keys: Path, tmp_path: Path) -> None:
    """The issue's 20 million empty objects: ~1.6 GB before the bounds, ~170 MB (interpreter,
    the 60 MB catalog and its copies) with them."""
    bundle = _signed_bundle(tmp_path / "empty.tar.zst", keys, b"[" + b"{}," * (EMPTY_OBJECTS - 1) + b"{}]")
    for args in (["inspect"], ["verify", "--public-key", str(keys / "dtbundle.pub")]):
        measured = subprocess.run(
            [sys.executable, "-c", PEAK_RSS, *args, str(bundle)],
            capture_output=True, text=True, check=True, timeout=60, env=cli_env(),
        )  # fmt: skip
        peak = int(measured.stdout)
        assert peak < PEAK_RSS_BOUND, f"dtbundle {args[0]} peaked at {peak // MiB} MiB"
