"""``python -m dtbundle.sandbox``: local sample registries for the demo and for trying dtbundle.

``demo``  starts a public-like source registry (Bearer tokens, anonymous pulls, like
          public.ecr.aws) with every public Dynatrace component (multi-arch, signed where the
          vendor signs with a key)
          and generic samples, a Dynatrace environment's built-in registry (Basic auth,
          PaaS token) and Deployment API, and a private-like target registry (TLS + Basic
          auth); then runs the Dynatrace flow end to end and prints the DynaKube fragments.
          ``--keep`` leaves everything up until Ctrl-C.
``serve`` only starts and seeds the registries, and prints how to reach them.

Both print every credential they created (fresh for each run) and, on Ctrl-C, SIGTERM or
SIGHUP, stop every process they started and remove their temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.registry import CredentialResolver, Credentials, RegistryClient, RegistryConfig
from dtbundle.sandbox import dynatrace as dtsandbox
from dtbundle.sandbox import images
from dtbundle.sandbox.lifecycle import Stopped, StopSignals, stop_stray_children
from dtbundle.sandbox.pki import make_ca
from dtbundle.sandbox.registry_server import RegistryServer, start_registry

ADMIN = "sandbox-admin"


@dataclass(frozen=True)
class Secrets:
    """Every credential of one sandbox run: fresh each time, printed, valid only on these local servers."""

    source_password: str  # ADMIN on the source registry (pushes; pulls of the public prefixes are anonymous)
    target_password: str  # ADMIN on the target registry
    paas_token: str  # the built-in registry's password (user: the environment ID)
    api_token: str  # the Deployment API's token

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            secrets.token_urlsafe(12),
            secrets.token_urlsafe(12),
            f"dt0c01.{secrets.token_hex(12).upper()}",
            f"dt0c01.{secrets.token_hex(12).upper()}",
        )


def _say(text: str) -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:  # nobody reads any more (``| head``): carry on, and clean up, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


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
    cosign_key: Path  # the vendor's signing key (PKCS#8 PEM), which signed the samples
    cosign_pub: Path
    secrets: Secrets


def start(workdir: Path, credentials: Secrets, running: contextlib.ExitStack, check: Callable[[], None]) -> Sandbox:
    """Start and seed everything; each server's stop goes on ``running`` as soon as it exists.
    ``check`` raises when a stop signal arrived: it is called after every step."""

    def started(server: RegistryServer) -> RegistryServer:
        running.callback(server.stop)
        check()
        return server

    ca = make_ca()
    source_users, target_users = {ADMIN: credentials.source_password}, {ADMIN: credentials.target_password}
    public = ("samples", "dynatrace")
    source = started(
        start_registry(workdir / "source", auth="token", ca=ca, users=source_users, public_prefixes=public)
    )
    target = started(start_registry(workdir / "target", auth="basic", tls=True, ca=ca, users=target_users))
    builtin_users = {dtsandbox.ENVIRONMENT_ID: credentials.paas_token}
    builtin = started(start_registry(workdir / "builtin", auth="basic", users=builtin_users))
    api = dtsandbox.DeploymentApi(credentials.api_token)
    running.callback(api.stop)
    check()
    key = ec.generate_private_key(ec.SECP256R1())
    cosign_key, cosign_pub = workdir / "cosign.key", workdir / "cosign.pub"
    cosign_key.touch(mode=0o600)
    cosign_key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    cosign_pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    creds = CredentialResolver(
        {
            source.address: Credentials("sandbox", ADMIN, credentials.source_password),
            builtin.address: Credentials("sandbox", dtsandbox.ENVIRONMENT_ID, credentials.paas_token),
        },
        use_config_files=False,
    )
    with RegistryClient(RegistryConfig(plain_http=True), creds) as client:
        samples = images.seed(client, source.address, key)
        check()
        dtsandbox.seed_public(client, source.address, key)
        check()
        dtsandbox.seed_builtin(client, builtin.address)
    return Sandbox(source, target, builtin, api, samples, cosign_key, cosign_pub, credentials)


def describe(box: Sandbox, workdir: Path) -> None:
    """Where everything is, and every credential this run created."""
    source, target, builtin = box.source, box.target, box.builtin
    token_service = source.token_server.realm if source.token_server else "none"
    _say(f"  source (public-like, anonymous pulls through Bearer tokens): {source.url}")
    count = len(dtsandbox.ALL_VERSIONS)
    _say(
        f"    {source.address}/dynatrace/<component repository>"
        f"  ({count} components, 3 platforms, the key-signed ones signed)"
    )
    _say(f"    {source.address}/samples/...  (generic samples: OCI and Docker types, one unsigned)")
    _say(f"    token service: {token_service}")
    _say(f"  built-in registry of environment {dtsandbox.ENVIRONMENT_ID} (Basic auth, PaaS token): {builtin.url}")
    _say(f"  Deployment API: {box.api.url}")
    _say(f"  target (private-like, TLS + Basic auth): {target.url}  CA {target.ca_cert}")
    _say("Credentials (created for this run; throwaway, valid only on these local servers):")
    _say(f"  source {source.address}: user {ADMIN}  password {box.secrets.source_password}  (to push)")
    _say(f"  target {target.address}: user {ADMIN}  password {box.secrets.target_password}")
    _say(f"  built-in {builtin.address}: user {dtsandbox.ENVIRONMENT_ID}  PaaS token {box.secrets.paas_token}")
    _say(f"  Deployment API {box.api.url}: API token {box.secrets.api_token}")
    _say(f"  vendor cosign key: {box.cosign_key} (private, PKCS#8 PEM)  {box.cosign_pub} (public)")
    _say(f"Work directory (CA, keys, registry storage; removed on exit): {workdir}")


def demo(box: Sandbox, workdir: Path) -> None:
    """The Dynatrace flow, internet side to air-gapped side."""
    keys, out = workdir / "keys", workdir / "out"
    out.mkdir()
    pub, cosign_pub = str(keys / "dtbundle.pub"), str(box.cosign_pub)
    # A current Operator (its DynaKube is v1beta6, images pinned with imageRef.digest).
    sample = {**dtsandbox.SAMPLE_VERSIONS, "operator": dtsandbox.NEWER_OPERATOR}
    versions = [f"--version={n}={v}" for n, v in sample.items()]
    environment = ["--environment-url", f"https://{dtsandbox.ENVIRONMENT_ID}.live.dynatrace.com"]
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
    _run_dtbundle(
        "dynatrace",
        "versions",
        "--plain-http",
        "--dynatrace-registry",
        f"{box.source.address}/dynatrace",
        "--environment-url",
        box.api.url,
        env={"DT_API_TOKEN": box.secrets.api_token},
    )
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
            *environment,
            str(bundle),
            stdin=box.secrets.target_password,
        )
    _say(f"\n$ cat {dynakube}")
    _say(dynakube.read_text())
    commands = dynakube.with_name(f"{dynakube.stem}-commands.sh")  # Helm from the private registry
    _say(f"$ cat {commands}")
    _say(commands.read_text())

    _say("=== The next update: only what the target lacks (an inventory, then a delta bundle) ===")
    inventory, update = out / "inventory.json", out / "update.tar.zst"
    _run_dtbundle("inventory", *mapping, *target, "--bundle", str(bundle), "-o", str(inventory),
                  stdin=box.secrets.target_password)  # fmt: skip
    _run_dtbundle(*dynatrace_export, "--option", "cloud-native-fullstack", "--option", "kspm", *versions,
                  "--inventory", str(inventory), "--output", str(update))  # fmt: skip
    _run_dtbundle("import", "--public-key", pub, *mapping, *target, str(update), stdin=box.secrets.target_password)

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
        f"--version=operator={sample['operator']}",
        f"--version=oneagent-classic={dtsandbox.SAMPLE_VERSIONS['oneagent']}",
        f"--version=activegate={dtsandbox.SAMPLE_VERSIONS['activegate']}",
        "--output",
        str(classic),
        env={"DT_PAAS_TOKEN": box.secrets.paas_token},
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
        *environment,
        str(classic),
        stdin=box.secrets.target_password,
    )
    _say(f"\n$ cat {classic_yaml}")
    _say(classic_yaml.read_text())
    _say(
        "The demo resolved Dynatrace versions, exported the cloud-native full-stack and KSPM images (every\n"
        "platform, every signature, checked against the vendor key), verified the bundle offline, imported it\n"
        "into a TLS + basic-auth registry with the same digests (twice: the second run pushed nothing), and\n"
        "wrote DynaKube fragments pinned by digest; took an inventory of the target and exported the same\n"
        "images again as a delta bundle that leaves out every layer the target holds; then did the same for\n"
        "Classic Full-Stack, whose OneAgent comes unsigned from the built-in registry and is reported as such."
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtbundle.sandbox", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["demo", "serve"])
    parser.add_argument("--keep", action="store_true", help="demo: keep the registries running afterwards")
    args = parser.parse_args(argv)
    signals = StopSignals()  # from here on, SIGTERM, SIGINT and SIGHUP unwind the stack below
    running = contextlib.ExitStack()  # undone in reverse: servers, stray children, the directory
    workdir: Path | None = None
    serving, status = False, 0
    try:
        workdir = Path(running.enter_context(tempfile.TemporaryDirectory(prefix="dtbundle-sandbox-")))
        running.callback(stop_stray_children)
        _say(f"Starting sample registries on 127.0.0.1 (Debian's docker-registry) in {workdir} ...")
        box = start(workdir, Secrets.generate(), running, signals.check)
        describe(box, workdir)
        if args.command == "demo":
            demo(box, workdir)
        signals.check()
        if args.command == "serve" or args.keep:
            serving = True
            _say("\nRegistries are up; press Ctrl-C (or send SIGTERM) to stop them.")
            while True:  # short naps: the signal is acted on at the next check
                time.sleep(0.1)
                signals.check()
    except Stopped as stop:
        # Asked to stop while serving: that is how serving ends. Earlier: interrupted.
        status = 0 if serving else 128 + stop.signum
        _say(f"\n{stop}: stopping the registries ...")
    finally:
        signals.stopping = True  # a second Ctrl-C must not cut the cleanup short
        running.close()
    if workdir is not None:
        _say(f"Stopped every registry and server; removed {workdir}.")
    return status


if __name__ == "__main__":
    sys.exit(main())
