"""Human-readable text for results (the CLI prints these; ``--json`` prints the data)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from dtbundle.bundle.format import Catalog
from dtbundle.bundle.reader import VerifyResult
from dtbundle.discovery import ResolvedImage
from dtbundle.export.run import ExportSummary
from dtbundle.importer.report import ImportReport
from dtbundle.oci.kinds import ArtifactKind
from dtbundle.trust.evaluate import Coverage, ImageVerification


def human_bytes(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def resolved(image: ResolvedImage) -> str:
    lines = [f"{image.pinned}", f"  {image.media_type} ({image.size} bytes)"]
    for p in image.platforms:
        lines.append(f"  {p.platform or 'unknown'!s:<16} {p.digest}")
    for a in image.attachments:
        kind = str(a.kind)
        if a.kind == ArtifactKind.REFERRER:
            kind = f"referrer {a.descriptor.artifact_type or a.descriptor.media_type}"
        lines.append(f"  {kind:<16} {a.descriptor.digest} -> {a.subject[:19]}… (via {a.found_via})")
    if not image.attachments:
        lines.append("  no signatures or referrers found")
    return "\n".join(lines)


def signature_lines(verifications: Sequence[ImageVerification]) -> list[str]:
    """One block per image: verdict, signers, and what covers each platform manifest."""
    lines = []
    for v in verifications:
        if not v.verified and v.unsigned_by_design:
            lines.append(f"  unsigned by design: {v.image} — {v.unsigned_by_design}")
            continue
        mark = "signature OK" if v.verified else "NOT VERIFIED"
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
    mbps = s.uncompressed_bytes / 1e6 / s.seconds if s.seconds else 0.0
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
    lines += [
        f"wrote {s.path} ({human_bytes(s.compressed_bytes)}), sha256 {s.sha256}",
        f"  checksum file {s.sidecar}; catalog signed with key {s.key_id}",
        f"  {s.images} image(s), {s.platforms} platform manifest(s), signatures and referrers: {kinds}",
        f"  {s.manifests} manifests, {s.blobs} blobs, {human_bytes(s.uncompressed_bytes)} -> "
        f"{human_bytes(s.compressed_bytes)} (x{ratio:.2f}) in {s.seconds:.1f} s ({mbps:.1f} MB/s)",
    ]
    lines += [f"  warning: {w}" for w in s.warnings]
    lines += signature_lines(s.signatures)
    return "\n".join(lines)


def verify_result(path: str, r: VerifyResult) -> str:
    return (
        f"{path}: OK — signature by key {r.key_id}; {r.files} files, {human_bytes(r.bytes)} "
        f"match the catalog ({len(r.catalog.images)} images)"
    )


def catalog(c: Catalog, *, signature_note: str) -> str:
    lines = [
        f"created {c.created} by dtbundle {c.tool_version}; {len(c.files)} files, "
        f"{human_bytes(c.total_size)} uncompressed; {signature_note}"
    ]
    for image in c.images:
        lines.append(f"{image.ref_name}@{image.digest}")
        lines.append(f"  {image.media_type} (from {image.source})")
        if image.original_digest:
            lines.append(f"  trimmed by --platform from {image.original_digest}")
        for p in image.platforms:
            lines.append(f"  {p.platform or 'unknown':<16} {p.digest}")
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
    lines = [f"{r.bundle}: {head}; {signed}"]
    lines += [f"  {name}: {count}" for name, count in sorted(r.counts.items())]
    if not r.to_layout:
        verb = "would upload" if r.dry_run else "uploaded"
        lines.append(f"  {verb} {human_bytes(r.bytes_uploaded)} in {r.seconds:.1f} s")
    if r.images:
        lines.append("images:" if not r.dry_run else "images (would be):")
        lines += [f"  {i.target}" for i in r.images]
    elif not r.counts:
        lines.append("  nothing to do")
    lines += signature_lines(r.signatures)
    return "\n".join(lines)
