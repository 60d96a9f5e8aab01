"""The results as one JSON document and as a Markdown table to paste into the README."""

from __future__ import annotations

import os
import platform
import time
from importlib.metadata import version
from typing import Any

from bench.scenarios import Scenario


def document(
    scenarios: list[Scenario],
    results: dict[str, dict[str, dict[str, Any]]],
    columns: list[str],
    quick: bool,
    started: float,
) -> dict[str, Any]:
    """Everything measured, with the machine it ran on and each target's verdict."""
    rows = []
    for s in scenarios:
        by_server = results[s.key]
        base = by_server.get("baseline", {}).get(s.metric)
        value = by_server.get("journey", {}).get(s.metric)
        rows.append(
            {
                "scenario": s.key,
                "title": s.title,
                "metric": s.metric,
                "unit": s.unit,
                "target": s.target.text,
                "met": None if value is None else s.target.check(value, base),
                "ratio_to_baseline": value / base if value is not None and base else None,
                "baseline_note": s.baseline_note,
                "extra": list(s.extra),
                "results": by_server,
            }
        )
    return {
        "mode": "quick" if quick else "full",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(started)),
        "seconds": round(time.time() - started, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "load_average_at_end": os.getloadavg(),
            "python": platform.python_version(),
            "grpcio": version("grpcio"),
        },
        "columns": columns,
        "rows": rows,
    }


def _figure(result: dict[str, Any], metric: str, extra: list[str]) -> str:
    if "error" in result:
        return "ERROR"
    if "skipped" in result:
        return "n/a"
    if metric not in result:
        return ""
    text = _number(result[metric])
    details = [f"{k} {_number(result[k])}" for k in extra if k in result]
    return text + (f" ({', '.join(details)})" if details else "")


def _number(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


def markdown(doc: dict[str, Any]) -> str:
    """The table, its machine line and footnotes, in Markdown."""
    m = doc["machine"]
    load = ", ".join(f"{x:.1f}" for x in m["load_average_at_end"])
    lines = [
        f"{doc['mode']} run, {doc['date']}, {doc['seconds']:.0f} s; {m['cpus']} CPUs "
        f"(load average at the end {load}); Python {m['python']}, grpcio {m['grpcio']}",
        "",
        "| # | scenario | unit | " + " | ".join(doc["columns"]) + " | journey / baseline "
        "| target | met |",
        "|---|---|---|" + "---|" * len(doc["columns"]) + "---|---|---|",
    ]
    notes = []
    for row in doc["rows"]:
        cells = [
            _figure(row["results"].get(c, {}), row["metric"], row["extra"]) for c in doc["columns"]
        ]
        ratio = f"{row['ratio_to_baseline']:.2f}" if row["ratio_to_baseline"] else "n/a"
        met = {True: "yes", False: "no", None: "?"}[row["met"]]
        lines.append(
            f"| {row['scenario']} | {row['title']} | {row['unit']} | "
            + " | ".join(cells)
            + f" | {ratio} | {row['target']} | {met} |"
        )
        if row["baseline_note"]:
            notes.append(f"- {row['scenario']}: baseline {row['baseline_note']}.")
    return "\n".join([*lines, "", *notes])


def failures(doc: dict[str, Any]) -> list[str]:
    """Every scenario run that errored: lost, repeated or failed (slowness is never a failure)."""
    return [
        f"scenario {row['scenario']} on {name}: {result['error']}"
        for row in doc["rows"]
        for name, result in row["results"].items()
        if "error" in result
    ]
