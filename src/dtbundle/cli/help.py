"""How ``--help`` reads: metavars a person understands, and examples under each command.

Typer shows a parameter's Python type (``<bool>``, ``<list[str]>``) where a user expects a
placeholder; the command and group classes here give flags no placeholder and every other
option a plain one (``FILE``, ``DIR``, ``TEXT``, ``N``), unless it names its own metavar.
"""

from __future__ import annotations

from typing import Any

import typer.core

# Examples shown under each command's options (``--help``); rich renders them as written.
EPILOGS = {
    "resolve": """Examples:

  dtbundle resolve public.ecr.aws/dynatrace/dynatrace-operator:v1.4.0

  dtbundle resolve --json --plain-http 127.0.0.1:5000/samples/operator:1.0.0""",
    "keygen": """Examples:

  dtbundle keygen --output-dir keys

  DTBUNDLE_KEY_PASSPHRASE=… dtbundle keygen --output-dir keys --algorithm ecdsa-p256""",
    "export": """Examples:

  dtbundle export --signing-key keys/dtbundle.key -o dt.tar.zst public.ecr.aws/dynatrace/dynatrace-operator:v1.4.0

  dtbundle export --signing-key keys/dtbundle.key -o dt.tar.zst --platform linux/amd64 --images-file images.toml

  dtbundle export --signing-key keys/dtbundle.key -o dt.tar.zst --dynatrace --option cloud-native-fullstack
  --version operator=v1.4.0 --version oneagent=1.305.57.20250115-123456 --cosign-key cosign.pub
  --require-signatures

  dtbundle export --signing-key keys/dtbundle.key -o update.tar.zst --inventory inventory.json
  --inventory-key keys/site.pub --volume-size 4GiB --dynatrace --option cloud-native-fullstack

  dtbundle export --signing-key keys/dtbundle.key -o - IMAGES… | dtbundle import - --public-key
  keys/dtbundle.pub --registry registry.example.com""",
    "verify": """Examples:

  dtbundle verify --public-key dtbundle.pub dt.tar.zst

  dtbundle verify --public-key dtbundle.pub --cosign-key cosign.pub --require-signatures dt.tar.zst

  dtbundle verify --public-key dtbundle.pub dt.002.tar.zst dt.001.tar.zst

  dtbundle verify --public-key dtbundle.pub - < dt.tar.zst""",
    "inspect": """Examples:

  dtbundle inspect dt.tar.zst

  dtbundle inspect --public-key dtbundle.pub --json dt.tar.zst""",
    "import": """Examples:

  dtbundle import --public-key dtbundle.pub --registry registry.example.com/mirror dt.tar.zst

  dtbundle import --public-key dtbundle.pub --registry registry.example.com
  --map public.ecr.aws/dynatrace=registry.example.com --dry-run dt.tar.zst

  dtbundle import --public-key dtbundle.pub --to-oci ./layout dt.tar.zst

  dtbundle import --public-key dtbundle.pub --registry registry.example.com dt.003.tar.zst dt.001.tar.zst""",
    "inventory": """Examples:

  dtbundle inventory --registry registry.example.com/mirror --bundle dt.tar.zst -o inventory.json

  dtbundle inventory --registry registry.example.com --map public.ecr.aws/dynatrace=registry.example.com
  --bundle dt.tar.zst --signing-key keys/dtbundle.key -o inventory.json

  dtbundle inventory --registry registry.example.com/mirror --repository dynatrace/dynatrace-oneagent
  -o inventory.json""",
    "dynakube": """Examples:

  dtbundle dynakube --registry registry.example.com/mirror -o dynakube.yaml dt.tar.zst""",
    "dynatrace versions": """Examples:

  dtbundle dynatrace versions
  dtbundle dynatrace versions --json --dynatrace-registry registry.example.com/dynatrace
  DT_API_TOKEN=… dtbundle dynatrace versions --environment-url https://abc12345.live.dynatrace.com""",
}

_PLACEHOLDERS = {"int": "N", "float": "SECONDS", "str": "TEXT", "path": "PATH", "file": "FILE", "dir": "DIR"}


def _placeholders(params: list[Any]) -> list[Any]:
    for param in params:
        if isinstance(param, typer.core.TyperArgument) and param.metavar is None and param.name:
            param.metavar = param.name.upper()  # usage adds "..." for repeatable arguments
            continue
        if not isinstance(param, typer.core.TyperOption) or param.metavar is not None:
            continue
        if param.is_flag:
            param.metavar = ""
            continue
        shown = param.display_type_rich(None)  # type: ignore[arg-type]  # e.g. "<int range>", "<list[Path]>"
        words = (shown or "").strip("<>").replace("list[", "").replace("]", "").split()
        key = words[0].lower() if words else "str"
        param.metavar = _PLACEHOLDERS.get(key, "TEXT")
    return params


class Command(typer.core.TyperCommand):
    """A command whose options show placeholders, not Python types."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _placeholders(super().get_params(ctx))


class Group(typer.core.TyperGroup):
    """A command group (``dtbundle``, ``dtbundle dynatrace``) with the same placeholders."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _placeholders(super().get_params(ctx))
