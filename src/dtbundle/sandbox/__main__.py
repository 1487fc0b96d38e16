"""``python -m dtbundle.sandbox``: local sample registries for the demo and for trying dtbundle.

``demo``  starts a public-like source registry (Bearer tokens, anonymous pulls, like
          public.ecr.aws) and a private-like target registry (TLS + Basic auth), seeds
          the source with signed multi-arch sample images, runs dtbundle against them,
          and stops everything (``--keep`` leaves the registries up until Ctrl-C).
``serve`` only starts and seeds the registries, and prints how to reach them.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from dtbundle.registry import CredentialResolver, Credentials, RegistryClient, RegistryConfig
from dtbundle.sandbox import images
from dtbundle.sandbox.pki import make_ca
from dtbundle.sandbox.registry_server import RegistryServer, start_registry

ADMIN, ADMIN_PASSWORD = "sandbox-admin", "sandbox-admin-password"  # local throwaway registries only


def _say(text: str) -> None:
    print(text, flush=True)


def _run_dtbundle(*args: str, stdin: str | None = None) -> None:
    shown = shlex.join(args)
    _say(f"\n$ {'echo *** | ' if stdin else ''}dtbundle {shown}")
    subprocess.run(
        [sys.executable, "-m", "dtbundle", *args], check=True, text=True, input=None if stdin is None else stdin + "\n"
    )


def start(workdir: Path) -> tuple[RegistryServer, RegistryServer, list[images.SampleImage], Path]:
    ca = make_ca()
    source = start_registry(
        workdir / "source",
        auth="token",
        ca=ca,
        users={ADMIN: ADMIN_PASSWORD},
        public_prefixes=("samples",),
    )
    target = start_registry(workdir / "target", auth="basic", tls=True, ca=ca, users={ADMIN: ADMIN_PASSWORD})
    key = ec.generate_private_key(ec.SECP256R1())
    cosign_pub = workdir / "cosign.pub"
    cosign_pub.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    creds = CredentialResolver({source.address: Credentials("sandbox", ADMIN, ADMIN_PASSWORD)}, use_config_files=False)
    with RegistryClient(RegistryConfig(plain_http=True), creds) as client:
        samples = images.seed(client, source.address, key)
    return source, target, samples, cosign_pub


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dtbundle.sandbox",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["demo", "serve"])
    parser.add_argument("--keep", action="store_true", help="demo: keep the registries running afterwards")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dtbundle-sandbox-") as tmp:
        workdir = Path(tmp)
        _say("Starting sample registries on 127.0.0.1 (Debian's docker-registry) ...")
        source, target, samples, cosign_pub = start(workdir)
        try:
            _say(f"  source (public-like, anonymous pull via Bearer token): {source.url}")
            _say(f"  target (private-like, TLS + Basic auth):               {target.url}")
            _say(f"  target CA certificate: {target.ca_cert}   user: {ADMIN}")
            _say(f"  sample images signed with the cosign key {cosign_pub}:")
            for sample in samples:
                kind = "index" if sample.manifest.children else "image"
                _say(f"    {sample.ref}  ({kind}, {'signed' if sample.signed else 'unsigned'})")
            if args.command == "demo":
                refs = [str(s.ref) for s in samples]
                keys, bundle = workdir / "keys", workdir / "out" / "samples.tar.zst"
                bundle.parent.mkdir()
                _run_dtbundle("resolve", "--plain-http", refs[0])
                _run_dtbundle("keygen", "--output-dir", str(keys))
                _run_dtbundle(
                    "export",
                    "--plain-http",
                    "--signing-key",
                    str(keys / "dtbundle.key"),
                    "--output",
                    str(bundle),
                    "--cosign-key",
                    str(cosign_pub),
                    *refs,
                )
                _say(f"\n$ (cd {bundle.parent} && sha256sum -c {bundle.name}.sha256)")
                subprocess.run(["sha256sum", "-c", f"{bundle.name}.sha256"], cwd=bundle.parent, check=True)
                _run_dtbundle(
                    "verify", "--public-key", str(keys / "dtbundle.pub"), "--cosign-key", str(cosign_pub), str(bundle)
                )
                _run_dtbundle("inspect", "--public-key", str(keys / "dtbundle.pub"), str(bundle))
                _say("\n--- the air gap: only the bundle, its .sha256, dtbundle.pub and cosign.pub cross it ---")
                target_args = ["--ca-cert", str(target.ca_cert), "--username", ADMIN, "--password-stdin"]
                mapping = [
                    "--registry",
                    target.address,
                    "--map",
                    f"{source.address}/samples={target.address}/dynatrace",
                ]
                for _ in range(2):  # the second run finds everything in place and pushes nothing
                    _run_dtbundle(
                        "import",
                        "--public-key",
                        str(keys / "dtbundle.pub"),
                        "--cosign-key",
                        str(cosign_pub),
                        *mapping,
                        *target_args,
                        str(bundle),
                        stdin=ADMIN_PASSWORD,
                    )
                _run_dtbundle(
                    "resolve",
                    "--ca-cert",
                    str(target.ca_cert),
                    "--username",
                    ADMIN,
                    "--password-stdin",
                    f"{target.address}/dynatrace/operator:1.0.0",
                    stdin=ADMIN_PASSWORD,
                )
                _say(
                    "\nThe demo exported every sample image (all platforms, all cosign signatures), pulled"
                    "\nanonymously through the token flow, into one signed bundle, checking the image signatures;"
                    "\nverified the bundle and the signatures again offline; and imported it into a TLS + basic-auth"
                    "\nregistry with the same digests (the second import pushed nothing). samples/tool is unsigned"
                    "\non purpose: it is reported, and --require-signatures would refuse it."
                )
            if args.command == "serve" or args.keep:
                _say("\nRegistries are up; press Ctrl-C to stop them.")
                try:
                    while True:
                        time.sleep(3600)
                except KeyboardInterrupt:
                    pass
        finally:
            source.stop()
            target.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
