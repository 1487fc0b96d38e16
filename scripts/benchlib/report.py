"""The suite's numbers: medians and ratios (JSON), and the markdown tables printed from them."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from typing import Any

from benchlib.suite import Run

RSS_TARGET_MIB = 150


def _ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b else None


def summarize(runs: list[Run]) -> dict[str, Any]:
    seconds = [r.seconds for r in runs]
    parts = {name: round(statistics.median(r.parts[name] for r in runs), 3) for name in runs[0].parts}
    return {
        "median_s": round(statistics.median(seconds), 3),
        "min_s": round(min(seconds), 3),
        "max_s": round(max(seconds), 3),
        "peak_rss_mib": round(max(r.rss_kib for r in runs) / 1024, 1),
        **({"parts_median_s": parts} if parts else {}),
        **(
            {
                "turns_median": statistics.median(r.turns for r in runs if r.turns is not None),
                "connections_median": statistics.median(r.connections for r in runs if r.connections is not None),
            }
            if all(r.turns is not None for r in runs)
            else {}
        ),
        "runs": [
            {**asdict(r), "seconds": round(r.seconds, 3), "parts": {k: round(v, 3) for k, v in r.parts.items()}}
            for r in runs
        ],
    }


def build(raw: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: ``meta``, then per set its facts, every tool's summary and the ratios."""
    sets = {}
    for key, result in raw.items():
        export = {tool: summarize(runs) for tool, runs in result["export"].items()}
        import_ = {tool: summarize(runs) for tool, runs in result["import"].items()}
        ours_e, ours_i = export["dtbundle"]["median_s"], import_["dtbundle"]["median_s"]
        floors = {tool: s["median_s"] for tool, s in import_.items() if tool.startswith("floor")}
        ratios = {
            "export": {
                "dtbundle/skopeo": _ratio(ours_e, export["skopeo"]["median_s"]),
                "dtbundle/floor": _ratio(ours_e, export["floor"]["median_s"]),
            },
            "import": {
                "dtbundle/skopeo": _ratio(ours_i, import_["skopeo"]["median_s"]),
                **{f"dtbundle/{tool}": _ratio(ours_i, secs) for tool, secs in floors.items()},
                **({"dtbundle/best floor": _ratio(ours_i, min(floors.values()))} if floors else {}),
            },
        }
        targets = result["targets"]
        met = None
        if targets:
            met = {
                "export": ratios["export"]["dtbundle/skopeo"] <= targets["export"],
                "import": ratios["import"]["dtbundle/skopeo"] <= targets["import"],
                "rss": max(export["dtbundle"]["peak_rss_mib"], import_["dtbundle"]["peak_rss_mib"]) <= RSS_TARGET_MIB,
            }
        facts = {k: v for k, v in result.items() if k not in ("export", "import")}
        sets[key] = {**facts, "export": export, "import": import_, "ratios": ratios, "targets_met": met}
    return {**meta, "rss_target_mib": RSS_TARGET_MIB, "sets": sets}


def _target(ratio: float | None, target: float | None) -> str:
    if ratio is None or target is None:
        return ""
    return f" (target <= {target:g}: {'met' if ratio <= target else 'NOT met'})"


def markdown(report: dict[str, Any]) -> str:
    sets = report["sets"]
    lines = [
        f"dtbundle vs the skopeo pipeline: medians of {report['rounds']} rounds, rotating order; "
        f"{report['cpus']} cores; dtbundle {report['dtbundle']} ({report['commit']}"
        f"{', src/ modified' if report.get('src_modified') else ''}), skopeo {report['skopeo']}; "
        f"1-minute load average {_loads(report)} during the runs{_code_changes(report)}",
        "",
        "| set | export (dtbundle / skopeo) | import (dtbundle / skopeo) |",
        "|---|---|---|",
    ]
    for s in sets.values():
        targets = s["targets"] or {}
        cells = []
        for phase in ("export", "import"):
            ours, theirs = s[phase]["dtbundle"]["median_s"], s[phase]["skopeo"]["median_s"]
            ratio = s["ratios"][phase]["dtbundle/skopeo"]
            cells.append(f"{ours:.2f} / {theirs:.2f} s = {ratio:.2f}{_target(ratio, targets.get(phase))}")
        lines.append(f"| {_title(s)} | {cells[0]} | {cells[1]} |")
    floors = sorted({t for s in sets.values() for t in s["import"] if t.startswith("floor")}, key=_jobs)
    lines += [
        "",
        "The floor (minimal clients, benchlib/floor.py, same machine, same run"
        + {True: "; its exporter stores compressed layers, as dtbundle does", False: "; it compresses every layer"}.get(
            report.get("floor_stores_compressed_layers", False), ""
        )
        + "):",
        "",
        "| set | export: floor | dtbundle / floor | "
        + " | ".join(f"import: floor {_jobs(t)} at a time" for t in floors)
        + " | dtbundle / best floor |",
        "|---|---|---|" + "---|" * len(floors) + "---|",
    ]
    for s in sets.values():
        cells = [f"{s['export']['floor']['median_s']:.2f} s", f"{s['ratios']['export']['dtbundle/floor']:.2f}"]
        cells += [f"{s['import'][t]['median_s']:.2f} s" if t in s["import"] else "" for t in floors]
        best = s["ratios"]["import"].get("dtbundle/best floor")
        cells.append(f"{best:.2f}" if best is not None else "")
        lines.append(f"| {_title(s)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        f"Peak RSS, MiB (the highest of the rounds; a pipeline's is the sum of its processes; "
        f"target for dtbundle <= {report['rss_target_mib']}):",
        "",
        "| set | export: dtbundle | skopeo | floor | import: dtbundle | skopeo | "
        + " | ".join(f"floor {_jobs(t)}" for t in floors)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(floors),
    ]
    for s in sets.values():
        cells = [f"{s['export'][t]['peak_rss_mib']:.0f}" for t in ("dtbundle", "skopeo", "floor")]
        cells += [
            f"{s['import'][t]['peak_rss_mib']:.0f}" if t in s["import"] else "" for t in ["dtbundle", "skopeo", *floors]
        ]
        lines.append(f"| {_title(s)} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Every tool (seconds: median, min-max of the rounds; parts, request turns and connections through the",
    ]
    lines += ["delaying proxy: medians):", ""]
    lines += ["| set | step | median s | min-max s | MB/s | peak RSS MiB | turns / connections | parts |"]
    lines += ["|---|---|---|---|---|---|---|---|"]
    for s in sets.values():
        for phase in ("export", "import"):
            for tool, t in s[phase].items():
                parts = ", ".join(f"{k} {v:.2f}" for k, v in t.get("parts_median_s", {}).items()).replace("|", "\\|")
                rate = s["content_bytes"] / 1e6 / t["median_s"]
                turns = f"{t['turns_median']:g} / {t['connections_median']:g}" if "turns_median" in t else ""
                lines.append(
                    f"| {s['key']} | {phase} {tool} | {t['median_s']:.2f} | {t['min_s']:.2f}-{t['max_s']:.2f} | "
                    f"{rate:.0f} | {t['peak_rss_mib']:.0f} | {turns} | {parts} |"
                )
    return "\n".join(lines) + "\n"


def _jobs(tool: str) -> int:
    return int(tool.removeprefix("floor-j"))


def _title(s: dict[str, Any]) -> str:
    return (
        f"{s['title']} ({_size(s['content_bytes'])} in {s['files']} files, "
        f"{s['images']} images, {s['platforms']} platforms, {s['artifacts']} signatures)"
    )


def _size(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _loads(report: dict[str, Any]) -> str:
    loads = [
        run["load1"]
        for s in report["sets"].values()
        for phase in ("export", "import")
        for t in s[phase].values()
        for run in t["runs"]
        if "load1" in run
    ]
    return f"{min(loads):.1f}-{max(loads):.1f} (median {statistics.median(loads):.1f})" if loads else "unknown"


def _code_changes(report: dict[str, Any]) -> str:
    """A warning when dtbundle's source changed between runs (the suite measured several versions)."""
    versions = {
        run["src"]
        for s in report["sets"].values()
        for phase in ("export", "import")
        for t in s[phase].values()
        for run in t["runs"]
        if run.get("src")
    }
    return (
        f"; WARNING: the measured code (src/, the floor) changed during the suite ({len(versions)} versions)"
        if len(versions) > 1
        else ""
    )
