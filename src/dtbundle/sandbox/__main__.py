"""``python -m dtbundle.sandbox``: local sample registries for the demo and for trying dtbundle.

``demo``  starts a public-like source registry (Bearer tokens, anonymous pulls, like
          public.ecr.aws) with the five Dynatrace components (multi-arch, cosign-signed)
          and generic samples, a Dynatrace environment's built-in registry (Basic auth,
          PaaS token) and Deployment API, and a private-like target registry (TLS + Basic
          auth); then runs the Dynatrace flow end to end and prints the DynaKube fragments.
          ``--keep`` leaves everything up until Ctrl-C.
``serve`` only starts and seeds the registries, and prints how to reach them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.registry import CredentialResolver, Credentials, RegistryClient, RegistryConfig
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox import images
from dtbundle.sandbox.pki import make_ca
from dtbundle.sandbox.registry_server import RegistryServer, start_registry

ADMIN, ADMIN_PASSWORD = "sandbox-admin", "sandbox-admin-password"  # local throwaway registries only
PAAS_TOKEN, API_TOKEN = "dt0c01.SANDBOX-PAAS-TOKEN", "dt0c01.SANDBOX-API-TOKEN"  # sandbox only


def _say(text: str) -> None:
    print(text, flush=True)


def _run_dtbundle(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> None:
    """Show the command (secrets as ***), run it, stop the demo if it fails."""
    shown = shlex.join(args)
    secrets_shown = "".join(f"{k}=*** " for k in env or {})
    _say(f"\n$ {'echo *** | ' if stdin else ''}{secrets_shown}dtbundle {shown}")
    subprocess.run(
        [sys.executable, "-m", "dtbundle", *args],
        check=True,
        text=True,
        input=None if stdin is None else stdin + "\n",
        env={**os.environ, **(env or {})},
    )


@dataclass
class Sandbox:
    source: RegistryServer  # public-like: Bearer tokens, anonymous pulls (like public.ecr.aws)
    target: RegistryServer  # private-like: TLS + Basic auth
    builtin: RegistryServer  # a Dynatrace environment's built-in registry: user = environment ID, PaaS token
    api: dtsandbox.DeploymentApi
    samples: list[images.SampleImage]
    cosign_pub: Path

    def stop(self) -> None:
        for server in (self.source, self.target, self.builtin):
            server.stop()
        self.api.stop()


def start(workdir: Path) -> Sandbox:
    ca = make_ca()
    source = start_registry(
        workdir / "source", auth="token", ca=ca, users={ADMIN: ADMIN_PASSWORD}, public_prefixes=("samples", "dynatrace")
    )
    target = start_registry(workdir / "target", auth="basic", tls=True, ca=ca, users={ADMIN: ADMIN_PASSWORD})
    builtin = start_registry(workdir / "builtin", auth="basic", users={dtsandbox.ENVIRONMENT_ID: PAAS_TOKEN})
    key = ec.generate_private_key(ec.SECP256R1())
    cosign_pub = workdir / "cosign.pub"
    cosign_pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    creds = CredentialResolver(
        {
            source.address: Credentials("sandbox", ADMIN, ADMIN_PASSWORD),
            builtin.address: Credentials("sandbox", dtsandbox.ENVIRONMENT_ID, PAAS_TOKEN),
        },
        use_config_files=False,
    )
    with RegistryClient(RegistryConfig(plain_http=True), creds) as client:
        samples = images.seed(client, source.address, key)
        dtsandbox.seed_public(client, source.address, key)
        dtsandbox.seed_builtin(client, builtin.address)
    return Sandbox(source, target, builtin, dtsandbox.DeploymentApi(API_TOKEN), samples, cosign_pub)


def demo(box: Sandbox, workdir: Path) -> None:
    """The Dynatrace flow, internet side to air-gapped side."""
    keys, out = workdir / "keys", workdir / "out"
    out.mkdir()
    pub, cosign_pub = str(keys / "dtbundle.pub"), str(box.cosign_pub)
    versions = [f"--version={n}={v}" for n, v in dtsandbox.SAMPLE_VERSIONS.items()]
    # Both exports: Dynatrace mode from the sample registry, vendor signatures required, signed bundle.
    dynatrace_export = [
        "export",
        "--plain-http",
        "--dynatrace",
        "--dynatrace-registry",
        f"{box.source.address}/dynatrace",
        "--cosign-key",
        cosign_pub,
        "--require-signatures",
        "--signing-key",
        str(keys / "dtbundle.key"),
    ]
    _say("\n=== Internet side ===")
    _run_dtbundle("dynatrace", "options")
    _run_dtbundle("dynatrace", "versions", "--environment-url", box.api.url, env={"DT_API_TOKEN": API_TOKEN})
    _run_dtbundle("keygen", "--output-dir", str(keys))
    bundle = out / "dynatrace.tar.zst"
    _run_dtbundle(
        *dynatrace_export, "--option", "cloud-native-fullstack", "--option", "kspm", *versions, "--output", str(bundle)
    )
    _say(f"\n$ (cd {out} && sha256sum -c {bundle.name}.sha256)")
    subprocess.run(["sha256sum", "-c", f"{bundle.name}.sha256"], cwd=out, check=True)
    _say("\n=== the air gap: only the bundle, its .sha256, dtbundle.pub and cosign.pub cross it ===")
    _run_dtbundle("verify", "--public-key", pub, "--cosign-key", cosign_pub, "--require-signatures", str(bundle))
    target = ["--ca-cert", str(box.target.ca_cert), "--username", ADMIN, "--password-stdin"]
    mapping = ["--registry", box.target.address, "--map", f"{box.source.address}/dynatrace={box.target.address}"]
    dynakube = out / "dynakube.yaml"
    for _ in range(2):  # the second run finds everything in place and pushes nothing
        _run_dtbundle(
            "import",
            "--public-key",
            pub,
            "--cosign-key",
            cosign_pub,
            "--require-signatures",
            *mapping,
            *target,
            "--emit-dynakube",
            str(dynakube),
            str(bundle),
            stdin=ADMIN_PASSWORD,
        )
    _say(f"\n$ cat {dynakube}")
    _say(dynakube.read_text())

    _say("=== Classic Full-Stack: OneAgent from the environment's built-in registry (PaaS token) ===")
    classic = out / "classic.tar.zst"
    _run_dtbundle(
        *dynatrace_export,
        "--option",
        "classic-fullstack",
        "--environment-url",
        f"http://{box.builtin.address}",
        "--environment-id",
        dtsandbox.ENVIRONMENT_ID,
        f"--version=operator={dtsandbox.SAMPLE_VERSIONS['operator']}",
        f"--version=oneagent-classic={dtsandbox.SAMPLE_VERSIONS['oneagent']}",
        f"--version=activegate={dtsandbox.SAMPLE_VERSIONS['activegate']}",
        "--output",
        str(classic),
        env={"DT_PAAS_TOKEN": PAAS_TOKEN},
    )
    classic_yaml = out / "dynakube-classic.yaml"
    _run_dtbundle(
        "import",
        "--public-key",
        pub,
        *mapping,
        *target,
        "--emit-dynakube",
        str(classic_yaml),
        str(classic),
        stdin=ADMIN_PASSWORD,
    )
    _say(f"\n$ cat {classic_yaml}")
    _say(classic_yaml.read_text())
    _say(
        "The demo resolved Dynatrace versions, exported the cloud-native full-stack and KSPM images (every\n"
        "platform, every signature, checked against the vendor key), verified the bundle offline, imported it\n"
        "into a TLS + basic-auth registry with the same digests (twice: the second run pushed nothing), and\n"
        "wrote DynaKube fragments pinned by digest; then did the same for Classic Full-Stack, whose OneAgent\n"
        "comes unsigned from the built-in registry and is reported as such."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtbundle.sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["demo", "serve"])
    parser.add_argument("--keep", action="store_true", help="demo: keep the registries running afterwards")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dtbundle-sandbox-") as tmp:
        workdir = Path(tmp)
        _say("Starting sample registries on 127.0.0.1 (Debian's docker-registry) ...")
        box = start(workdir)
        try:
            _say(f"  source (public-like, anonymous pulls through Bearer tokens): {box.source.url}")
            _say(f"    {box.source.address}/dynatrace/dynatrace-<component>  (5 components, 3 platforms, signed)")
            _say(f"    {box.source.address}/samples/...  (generic samples: OCI and Docker types, one unsigned)")
            _say(
                f"  built-in registry of environment {dtsandbox.ENVIRONMENT_ID} (Basic auth, PaaS token): "
                f"{box.builtin.url}"
            )
            _say(f"  Deployment API: {box.api.url}")
            _say(f"  target (private-like, TLS + Basic auth): {box.target.url}  CA {box.target.ca_cert}  user {ADMIN}")
            _say(f"  vendor cosign key: {box.cosign_pub}")
            if args.command == "demo":
                demo(box, workdir)
            if args.command == "serve" or args.keep:
                _say("\nRegistries are up; press Ctrl-C to stop them.")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            box.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
