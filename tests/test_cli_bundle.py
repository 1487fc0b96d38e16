"""keygen, export, verify and inspect as a user runs them: exit codes, reports, no secrets."""

from __future__ import annotations

import json
from pathlib import Path

from dtbundle.bundle.key import generate_keys
from dtbundle.oci import Platform
from dtbundle.oci.reference import Reference
from dtbundle.sandbox import images
from dtbundle.sandbox.registry_server import RegistryServer
from tests.support.bundles import flip_byte, read_entries, write_entries
from tests.support.cli import assert_clean_error, run, run_in_process
from tests.support.registries import PASSWORD, USER, Exported, make_client, sample


def test_keygen_export_verify_inspect(
    plain_registry: RegistryServer, seeded: list[images.SampleImage], tmp_path: Path
) -> None:
    proc = run("keygen", "--output-dir", str(tmp_path / "keys"), "--algorithm", "ecdsa-p256")
    assert proc.returncode == 0 and "ecdsa-p256" in proc.stdout
    key, pub = tmp_path / "keys/dtbundle.key", tmp_path / "keys/dtbundle.pub"
    assert_clean_error(run_in_process("keygen", "--output-dir", str(tmp_path / "keys")), 2)

    out = tmp_path / "b.tar.zst"
    refs = [str(i.ref) for i in seeded]
    proc = run("export", "--plain-http", "--signing-key", str(key), "-o", str(out), "--json", *refs)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when stderr is not a terminal
    summary = json.loads(proc.stdout)
    assert summary["counts"]["images"] == 5 and summary["counts"]["platforms"] == 11
    assert summary["attachmentCounts"] == {"cosignSig": 13, "cosignAtt": 0, "cosignSbom": 0, "referrer": 0,
                                           "referrersIndex": 0}  # fmt: skip
    assert summary["compressedBytes"] == out.stat().st_size
    assert (tmp_path / "b.tar.zst.sha256").read_text() == f"{summary['sha256']}  b.tar.zst\n"

    proc = run("verify", "--public-key", str(pub), str(out))
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stderr
    proc = run("inspect", "--json", "--public-key", str(pub), str(out))
    report = json.loads(proc.stdout)
    assert report["bundleKey"] == summary["bundleKey"]
    assert [i["digest"] for i in report["images"]] == [i.digest for i in seeded]
    proc = run("inspect", str(out))
    assert "signature NOT checked" in proc.stdout and "linux/s390x" in proc.stdout

    assert "--force" in assert_clean_error(
        run_in_process("export", "--plain-http", "--signing-key", str(key), "-o", str(out), refs[0]), 2
    )


def test_verify_exit_codes(exported: Exported, tmp_path: Path) -> None:
    assert "--public-key" in assert_clean_error(run_in_process("verify", str(exported.path)), 2)
    generate_keys(tmp_path / "other")  # just another key pair: no process needed
    assert_clean_error(run("verify", "--public-key", str(tmp_path / "other/dtbundle.pub"), str(exported.path)), 3)
    entries = read_entries(exported.path)
    entries[-1] = (entries[-1][0], flip_byte(entries[-1][1]))
    bad = tmp_path / "bad.tar.zst"
    write_entries(bad, entries)
    line = assert_clean_error(run("verify", "--public-key", str(exported.pub), str(bad)), 3)
    assert entries[-1][0] in line
    assert_clean_error(
        run_in_process("verify", "--public-key", str(exported.pub), str(tmp_path / "missing.tar.zst")), 2
    )


def test_inspect_reads_only_the_catalog(exported: Exported, tmp_path: Path) -> None:
    # Cut the bundle right after its catalog and signature: inspect still works, verify does not.
    entries = read_entries(exported.path)
    head = tmp_path / "head.tar.zst"
    write_entries(head, entries[:2])
    proc = run("inspect", "--public-key", str(exported.pub), str(head))
    assert proc.returncode == 0 and "catalog signature verified" in proc.stdout
    assert_clean_error(run("verify", "--public-key", str(exported.pub), str(head)), 3)


def test_export_usage_errors(tmp_path: Path, exported: Exported) -> None:
    assert "no images" in assert_clean_error(run_in_process("export", "--signing-key", str(exported.key)), 2)
    not_a_key = tmp_path / "k.pem"
    not_a_key.write_text("hello")
    assert "private key" in assert_clean_error(run_in_process("export", "--signing-key", str(not_a_key), "a.io/b:1"), 2)
    assert "invalid platform" in assert_clean_error(
        run_in_process("export", "--signing-key", str(exported.key), "--platform", "amd64", "a.io/b:1"), 2
    )


def test_key_passphrase_is_used_and_never_printed(
    tmp_path: Path, plain_registry: RegistryServer, seeded: list[images.SampleImage]
) -> None:
    secret = "passphrase-that-must-not-leak"
    env = {"DTBUNDLE_KEY_PASSPHRASE": secret}
    proc = run("keygen", "--output-dir", str(tmp_path), env=env)
    assert proc.returncode == 0 and "encrypted" in proc.stdout and secret not in proc.stdout + proc.stderr
    args = [
        "export",
        "--plain-http",
        "--signing-key",
        str(tmp_path / "dtbundle.key"),
        "-o",
        str(tmp_path / "b.tar.zst"),
        str(sample(seeded, "tool").ref),
    ]
    line = assert_clean_error(run_in_process(*args), 2)
    assert "DTBUNDLE_KEY_PASSPHRASE" in line
    proc = run(*args, env=env)
    assert proc.returncode == 0 and secret not in proc.stdout + proc.stderr
    assert secret.encode() not in (tmp_path / "b.tar.zst").read_bytes()


def test_export_through_tls_and_token_auth(
    tls_token_registry: RegistryServer, tmp_path: Path, exported: Exported
) -> None:
    built = images.build_index(
        [images.build_image(Platform("linux", p), [images.make_layer(p, 3000)]) for p in ("amd64", "arm64")]
    )
    with make_client(tls_token_registry) as client:
        images.push(client, Reference(tls_token_registry.address, "secure/app", "1"), built)
    out = tmp_path / "b.tar.zst"
    proc = run(
        "export",
        "--ca-cert",
        str(tls_token_registry.ca_cert),
        "--username",
        USER,
        "--password-stdin",
        "--signing-key",
        str(exported.key),
        "-o",
        str(out),
        "--json",
        f"{tls_token_registry.address}/secure/app:1",
        stdin=PASSWORD + "\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["counts"]["platforms"] == 2 and PASSWORD not in proc.stdout + proc.stderr
    assert run("verify", "--public-key", str(exported.pub), str(out)).returncode == 0
