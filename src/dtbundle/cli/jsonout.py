"""The ``--json`` contract (``specs/json-output.md``): one JSON object per run, on stdout.

Every document starts with ``"schemaVersion": 1`` and ``"command"``; the fields after them
come from the typed results' ``to_json`` (``inspect``, which has no result type of its own,
reads the catalog through :func:`inspect_fields`). A command prints its document last, with
:func:`document`, so a run that fails prints only the error document, which
:func:`dtbundle.cli.app.main` writes (:func:`report_error`) when the command line asks for ``--json``.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from dtbundle.oci import Reference
from dtbundle.oci.kinds import attachment_counts

if TYPE_CHECKING:  # the library is imported by the command that runs, not by every --help
    from dtbundle.bundle.format import Catalog, CatalogImage

SCHEMA_VERSION = 1
FLAG = "--json"
_GROUPS = frozenset({"dynatrace"})  # commands whose subcommand is part of the command name


def document(command: str, fields: Mapping[str, Any]) -> str:
    """The document of a successful run of ``command``."""
    return json.dumps({"schemaVersion": SCHEMA_VERSION, "command": command, **fields}, indent=2)


def error_document(command: str | None, exit_code: int, kind: str, message: str) -> str:
    """The document of a failed run: ``kind`` is the error class name, ``message`` the one-line error."""
    error = {"exitCode": exit_code, "kind": kind, "message": message}
    return json.dumps({"schemaVersion": SCHEMA_VERSION, "command": command, "error": error}, indent=2)


def report_error(args: Sequence[str], exit_code: int, kind: str, message: str) -> None:
    """Print the error document on stdout when ``args`` ask for ``--json`` (the one-line error goes to
    stderr as always)."""
    if requested(args):
        typer.echo(error_document(command_of(args), exit_code, kind, message), err=carries_bundle(args))


_BUNDLE_ON_STDOUT: list[bool] = []  # set by a command that writes the bundle to stdout


def new_run() -> None:
    """A new command line (tests run several in one process): nothing is known of its stdout yet."""
    _BUNDLE_ON_STDOUT.clear()


def bundle_on_stdout() -> None:
    """This run writes the bundle to stdout (``export -o -``): an error document goes to stderr."""
    _BUNDLE_ON_STDOUT.append(True)


def carries_bundle(args: Sequence[str]) -> bool:
    """Whether stdout carries the bundle (``export -o -``): then every report goes to stderr. The command
    says so once it parsed its options; before that (a usage error), the command line is read."""
    if _BUNDLE_ON_STDOUT:
        return True
    options = list(args[: list(args).index("--")] if "--" in args else args)
    pairs = itertools.pairwise(options)

    def names_output(option: str) -> bool:  # -o, --output, or short flags ending in o (-qo)
        return option == "--output" or bool(re.fullmatch(r"-[A-Za-z]*o", option))

    return command_of(args) == "export" and (
        any(names_output(a) and b == "-" for a, b in pairs)
        or "--output=-" in options
        or any(re.fullmatch(r"-[A-Za-z]*o-", a) for a in options)
    )


def requested(args: Sequence[str]) -> bool:
    """Whether the command line asks for JSON (``--json`` before a ``--`` that ends the options)."""
    options = args[: list(args).index("--")] if "--" in args else args
    return FLAG in options


def command_of(args: Sequence[str]) -> str | None:
    """The command a command line names ('import', 'dynatrace versions'), or None when it names none."""
    words = [a for a in args if not a.startswith("-")]
    if not words:
        return None
    if words[0] in _GROUPS and len(words) > 1:
        return f"{words[0]} {words[1]}"
    return words[0]


def inspect_fields(bundle: Path, key_id: str | None, catalog: Catalog) -> dict[str, Any]:
    """``inspect --json``: the catalog's content, with the key that verified it (None: not checked)."""
    return {
        "bundle": str(bundle),
        "bundleKey": key_id,
        "created": catalog.created,
        "toolVersion": catalog.tool_version,
        "counts": {
            "images": len(catalog.images),
            "platforms": sum(len(i.platforms) or 1 for i in catalog.images),
            "files": len(catalog.files),
        },
        "attachmentCounts": attachment_counts(Counter(a.kind for a in catalog.artifacts)),
        "uncompressedBytes": catalog.total_size,
        "images": [_image(i, catalog) for i in catalog.images],
        "attachments": [
            {
                "kind": str(a.kind),
                "subject": a.subject,
                "reference": str(Reference(a.registry, a.repository, a.tag)),
                "digest": a.digest,
                "mediaType": a.media_type,
                "artifactType": a.artifact_type,
                "sizeBytes": a.size,
            }
            for a in catalog.artifacts
        ],
    }


def _image(image: CatalogImage, catalog: Catalog) -> dict[str, Any]:
    subjects = {image.digest, *(p.digest for p in image.platforms)}
    verified = (image.verification or {}).get("verified")
    return {
        "reference": image.source,
        "pinned": str(image.reference),
        "digest": image.digest,
        "mediaType": image.media_type,
        "sizeBytes": image.size,
        "originalDigest": image.original_digest,
        "platforms": [
            {"platform": p.platform, "digest": p.digest, "mediaType": p.media_type, "sizeBytes": p.size}
            for p in image.platforms
        ],
        "annotations": dict(image.annotations),
        "attachmentCounts": attachment_counts(Counter(a.kind for a in catalog.artifacts if a.subject in subjects)),
        "verifiedAtExport": verified if isinstance(verified, bool) else None,
    }
