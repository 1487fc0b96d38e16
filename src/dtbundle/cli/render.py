"""Human-readable text for results (the CLI prints these; ``--json`` prints the data)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dtbundle.importer.report import Landing
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.progress import format_bytes
from dtbundle.trust.outcome import Coverage, ImageStatus, PolicyResult, SignatureOutcome

if TYPE_CHECKING:  # results of the command that runs: its library is loaded by then, not by every --help
    from dtbundle.bundle.format import Catalog
    from dtbundle.bundle.reader import VerifyResult
    from dtbundle.discovery import ResolvedImage
    from dtbundle.export.summary import ExportSummary
    from dtbundle.importer.report import ImportReport
    from dtbundle.trust.evaluate import ImageVerification


def human_bytes(size: float) -> str:
    """IEC units (``1.5 GiB``), the same as progress shows."""
    return format_bytes(size)


# --quiet: one line per command, the final result.
def export_line(s: ExportSummary) -> str:
    if len(s.written) > 1:
        return f"wrote {len(s.written)} volumes {s.path} … {s.written[-1].path} ({human_bytes(s.compressed_bytes)})"
    return f"wrote {_bundle_name(s.path)} ({human_bytes(s.compressed_bytes)}, sha256 {s.sha256})"


def _bundle_name(path: object) -> str:
    return "the bundle to standard output" if str(path) == "-" else str(path)


def verify_line(path: str, r: VerifyResult, images: Sequence[ImageVerification] | None) -> str:
    line = f"verified {path}: {r.files} files, {len(r.catalog.images)} images"
    if images is not None:
        line += f", {sum(1 for v in images if v.verified)} of {len(images)} with a valid signature"
    return line


def import_line(r: ImportReport) -> str:
    what = "index entries" if r.to_layout else "tags"
    counts = {k.value: n for k, n in r.counts.items() if k.value.startswith(what)}
    unchanged = counts.get(f"{what} unchanged", 0)
    line = (
        f"{'dry run of' if r.dry_run else 'imported'} {r.bundle} into {r.target}: {sum(counts.values())} {what} "
        f"({sum(counts.values()) - unchanged} {'would change' if r.dry_run else 'new or replaced'}, "
        f"{unchanged} unchanged)"
    )
    if not r.to_layout:
        line += f", {human_bytes(r.bytes_uploaded)} {'would be uploaded' if r.dry_run else 'uploaded'}"
    return line + ("; nothing was written" if r.dry_run else "")


def shown(value: object) -> str:
    """Text that came from a bundle or a registry, safe for a terminal: control characters
    (escape sequences, carriage returns, newlines that could forge a line) become ``\\xNN``."""
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in str(value))


def resolved(image: ResolvedImage) -> str:
    lines = [f"{image.pinned}", f"  {shown(image.media_type)} ({image.size} bytes)"]
    for p in image.platforms:
        lines.append(f"  {shown(p.platform or 'unknown'):<16} {p.digest}")
    for a in image.attachments:
        kind = str(a.kind)
        if a.kind == ArtifactKind.REFERRER:
            kind = f"referrer {shown(a.descriptor.artifact_type or a.descriptor.media_type)}"
        lines.append(f"  {kind:<16} {a.descriptor.digest} -> {a.subject[:19]}… (via {a.found_via})")
    if not image.attachments:
        lines.append("  no signatures or referrers found")
    return "\n".join(lines)


def signature_lines(verifications: Sequence[ImageVerification]) -> list[str]:
    """The policy's verdict with its counts (nothing when no policy was given), then one block per
    image: verdict, signers, and what covers each platform manifest."""
    outcome = SignatureOutcome.of(verifications)
    if not outcome.checked:
        return []
    n = outcome.counts
    verdict = (
        "the policy passed"
        if outcome.result == PolicyResult.PASSED
        else "the policy FAILED (--require-signatures refuses this)"
    )
    lines = [
        f"image signatures: {n[ImageStatus.VERIFIED]} of {len(verifications)} verified, "
        f"{n[ImageStatus.UNSIGNED_BY_DESIGN]} unsigned by design, {n[ImageStatus.UNSIGNED]} unsigned, "
        f"{n[ImageStatus.REJECTED]} rejected: {verdict}"
    ]
    for v in verifications:
        if not v.verified and v.unsigned_by_design:
            lines.append(f"  unsigned by design: {v.image} — {v.unsigned_by_design}")
            continue
        mark = "signature OK" if v.verified else f"NOT VERIFIED ({ImageStatus.of(v)})"
        lines.append(f"  {mark}: {v.image} — {', '.join(v.signers) or 'no valid signature'}")
        coverage = v.coverage
        if len(coverage) > 1 or (coverage and v.digest not in coverage):
            index = sum(1 for c in coverage.values() if c.by_index)
            own = sum(1 for c in coverage.values() if c.by_own)
            none = sum(1 for c in coverage.values() if c == Coverage.NONE)
            lines.append(f"    platforms: {index} covered by the index signature, {own} by their own, {none} unsigned")
        for check in v.checks:
            if not check.verdict.valid:
                lines.append(f"    rejected {check.verdict.kind} {check.signature[:19]}…: {check.verdict.detail}")
    return lines


def export_summary(s: ExportSummary) -> str:
    ratio = s.uncompressed_bytes / s.compressed_bytes if s.compressed_bytes else 0.0
    rate = s.uncompressed_bytes / s.seconds if s.seconds else 0.0
    lines = []
    for image in s.per_image:
        found = ", ".join(f"{n} {k}" for k, n in sorted(image.found.items())) or "no signatures or referrers"
        plats = ", ".join(p for p in image.platforms if p) or "single platform"
        lines.append(f"  {image.reference}@{image.digest}")
        lines.append(f"    platforms: {plats}")
        lines.append(f"    found: {found}")
        if image.original_digest:
            lines.append(
                f"    trimmed by --platform from {image.original_digest}; "
                f"{image.dropped_with_trim} signature(s)/referrer(s) of the original index not carried"
            )
    kinds = ", ".join(f"{n} {k}" for k, n in sorted(s.artifacts.items())) or "none"
    if len(s.written) > 1 or s.volume_set:
        lines.append(f"wrote {len(s.written)} volume(s) of set {s.volume_set}, catalog signed with key {s.key_id}:")
        lines += [f"  {w.path} ({human_bytes(w.compressed_size)}), sha256 {w.sha256}" for w in s.written]
    else:
        lines.append(f"wrote {_bundle_name(s.path)} ({human_bytes(s.compressed_bytes)}), sha256 {s.sha256}")
        checksum = f"checksum file {s.sidecar}; " if s.sidecar else ""
        lines.append(f"  {checksum}catalog signed with key {s.key_id}")
    if s.required_blobs:
        lines.append(
            f"  delta: {s.required_blobs} blob(s) the target holds were left out, "
            f"{human_bytes(s.required_bytes)} saved (import checks they are there)"
        )
    lines += [
        f"  {s.images} image(s), {s.platforms} platform manifest(s), signatures and referrers: {kinds}",
        f"  {s.manifests} manifests, {s.blobs} blobs, {human_bytes(s.uncompressed_bytes)} -> "
        f"{human_bytes(s.compressed_bytes)} (x{ratio:.2f}) in {s.seconds:.1f} s ({human_bytes(rate)}/s)",
    ]
    if s.cache is not None:
        lines.append(
            f"  from --cache-dir: {s.cache.hits} of {s.blobs} blobs ({human_bytes(s.cache.hit_bytes)})"
            + (f", {s.cache.refetched} damaged cached file(s) downloaded again" if s.cache.refetched else "")
        )
    lines += [f"  warning: {w}" for w in s.warnings]
    lines += signature_lines(s.signatures)
    return "\n".join(lines)


def volume_line(count: int, given: Sequence[int], missing: Sequence[int]) -> str:
    """Which volumes of a set a run read, and which are still missing."""
    read = ", ".join(str(n) for n in given)
    if not missing:
        return f"  volumes {read} of {count}: no volume of the set is missing"
    return f"  volumes {read} of {count}; still missing: " + ", ".join(str(n) for n in missing)


def verify_result(path: str, r: VerifyResult, images: Sequence[ImageVerification] | None = None) -> str:
    """The headline: OK only when the bundle verified and the image-signature policy (if given) passed."""
    facts = (
        f"signature by key {r.key_id}; {r.files} files, {human_bytes(r.bytes)} "
        f"match the catalog ({len(r.catalog.images)} images)"
    )
    result = SignatureOutcome.of(images).result
    if result == PolicyResult.FAILED:
        return f"{path}: bundle intact, but image signatures FAILED the policy — {facts}"
    if result == PolicyResult.NOT_CHECKED:
        return f"{path}: OK — {facts}; image signatures not checked (no --cosign-key or keyless identity)"
    return f"{path}: OK — {facts}; image signatures passed the policy"


def catalog(c: Catalog, *, signature_note: str) -> str:
    lines = [
        f"created {shown(c.created)} by dtbundle {shown(c.tool_version)}; {len(c.files)} files, "
        f"{human_bytes(c.total_size)} uncompressed; {signature_note}"
    ]
    for image in c.images:
        lines.append(f"{shown(image.ref_name)}@{image.digest}")
        lines.append(f"  {shown(image.media_type)} (from {shown(image.source)})")
        if image.original_digest:
            lines.append(f"  trimmed by --platform from {image.original_digest}")
        for p in image.platforms:
            lines.append(f"  {shown(p.platform or 'unknown'):<16} {p.digest}")
        subjects = {image.digest, *(p.digest for p in image.platforms)}
        mine = Counter(a.kind for a in c.artifacts if a.subject in subjects)
        if mine:
            lines.append("  " + ", ".join(f"{n} {k}" for k, n in sorted(mine.items())))
        else:
            lines.append("  no signatures or referrers")
    return "\n".join(lines)


def import_report(r: ImportReport) -> str:
    head = "dry run: nothing was pushed" if r.dry_run else f"imported into {r.target}"
    signed = f"signature by key {r.signed_by}" if r.signed_by else "signature NOT verified (--insecure-skip-verify)"
    result = SignatureOutcome.of(r.signatures).result
    if result != PolicyResult.NOT_CHECKED:
        signed += f"; image signatures {'passed' if result == PolicyResult.PASSED else 'FAILED'} the policy"
    lines = [f"{r.bundle}: {head}; {signed}"]
    lines += [f"  {name}: {count}" for name, count in sorted(r.counts.items())]
    if not r.to_layout:
        verb = "would upload" if r.dry_run else "uploaded"
        lines.append(f"  {verb} {human_bytes(r.bytes_uploaded)} in {r.seconds:.1f} s")
    if r.images and not r.plan:  # a dry run's plan lists them, with their state
        lines.append("images:")
        lines += [f"  {i.target}" for i in r.images]
    elif not r.counts:
        lines.append("  nothing to do")
    if r.volumes is not None:
        lines.append(volume_line(r.volumes.count, r.volumes.given, r.volumes.missing))
    if r.waiting:
        lines.append(
            f"  not yet published ({len(r.waiting)}): the target lacks some of their blobs: import the missing volumes"
        )
        lines += [f"    {name}" for name in r.waiting]
    lines += signature_lines(r.signatures)
    return "\n".join(lines)


def dry_run_plan(r: ImportReport) -> str:
    """Per image of a dry run: where it would land, and whether it is new, present or a conflict."""
    width = max((len(p.source) for p in r.plan), default=0)
    lines = ["plan (nothing was written):"]
    for p in r.plan:
        note = f" (the tag is {p.current} now)" if p.state in (Landing.CONFLICT, Landing.OVERWRITE) else ""
        lines.append(f"  {p.state.value:<9} {p.source:<{width}} -> {p.target}@{p.digest}{note}")
    if r.conflicts:
        first = r.conflicts[0]
        lines.append(
            f"the import would be refused: {len(r.conflicts)} tag(s) point at another digest "
            f"({first.target} is {first.current}); pass --overwrite to replace them or --map to import elsewhere"
        )
    return "\n".join(lines)
