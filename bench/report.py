"""The results as one JSON document and as a Markdown table to paste into the README."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from bench.scenarios import TRACK_OF_ONE_TARGET, Scenario

ORDERINGS = ("none", "session")
# The one Journey side of the interleaved page-view ingest against NATS.
INGEST = ("journey",)


@dataclass(frozen=True)
class Versus:
    """A row of the Journey-against-NATS table: which scenario, and which figure of it."""

    number: int
    scenario: str
    title: str
    unit: str
    metric: str
    lower_is_better: bool = False


VERSUS = (
    Versus(
        1,
        "2",
        "Durable ingest, 32 concurrent callers (Journey: Track of 20; NATS: acked publish)",
        "events/s (NATS msg/s)",
        "events_per_s",
    ),
    Versus(2, "3", "Fan-out to 100 live subscribers", "events/s delivered", "delivered_per_s"),
    Versus(
        3, "5", "Replay of {events:,} stored events to one subscriber", "events/s", "events_per_s"
    ),
    # From the send on both sides: NATS delivers before the publisher has its ack, so the
    # from-reply figure of scenario 4 would be 0 for NATS whatever its speed.
    Versus(
        4,
        "4",
        "Live latency p99 from send to receipt, 500 events/s, 10 subscribers",
        "ms",
        "p99_from_send_ms",
        lower_is_better=True,
    ),
    # Numbered after the rows that runs before it reported, so that theirs keep their numbers.
    Versus(
        5,
        "8",
        "Durable ingest of page views with 3 properties, 32 concurrent callers "
        "(Journey: Track of 20; NATS: acked publish of each as JSON)",
        "events/s (NATS msg/s)",
        "events_per_s",
    ),
    Versus(
        6,
        "11",
        "Consumer group of 4 members acking every event of a backlog, ordering NONE "
        "(NATS: durable pull consumer, explicit acks)",
        "events/s processed",
        "events_per_s",
    ),
    Versus(
        7,
        "12",
        "Consumer group of 4 members acking every event of a backlog, ordering SESSION "
        "(NATS: the same consumer, no order per key)",
        "events/s processed",
        "events_per_s",
    ),
)


def best(
    by_column: dict[str, dict[str, Any]],
    candidates: list[str],
    metric: str,
    lower_is_better: bool,
) -> tuple[str, float] | None:
    """The candidate column with the best figure for `metric`, and that figure; None if none."""
    figures = [(by_column[c][metric], c) for c in candidates if metric in by_column.get(c, {})]
    if not figures:
        return None
    value, name = min(figures) if lower_is_better else max(figures)
    return name, value


def versus_nats(
    results: dict[str, dict[str, dict[str, Any]]],
    nats: dict[str, Any],
    candidates: list[str] | None = None,
) -> dict[str, Any]:
    """The Journey-against-NATS comparison: a row for each of its scenarios that ran.

    The target is met by Journey's best configuration among `candidates` (the columns of this
    version: SQLite, PostgreSQL with 1 or more workers); each one's figure is kept too.
    """
    candidates = candidates or ["journey"]
    rows = []
    for v in VERSUS:
        if v.scenario not in results or nats.get("skipped"):
            continue
        by_column = results[v.scenario]
        theirs = by_column.get("nats", {})
        their_value = theirs.get(v.metric)
        found = best(by_column, candidates, v.metric, v.lower_is_better)
        ratio = met = None
        if found is not None and their_value is not None:
            ours_value = found[1]
            ratio = ours_value / their_value if their_value else None
            met = ours_value <= their_value if v.lower_is_better else ours_value >= their_value
        events = next((r["events"] for r in by_column.values() if "events" in r), 0)
        rows.append(
            {
                "comparison": v.number,
                "scenario": v.scenario,
                "title": v.title.format(events=events),
                "unit": v.unit,
                "metric": v.metric,
                "journey": {c: by_column.get(c, {}).get(v.metric) for c in candidates},
                "best": None if found is None else found[0],
                "nats": their_value,
                "ratio_best_to_nats": ratio,
                "target": "<= NATS's p99" if v.lower_is_better else ">= 1.0 x NATS",
                "met": met,
                "lower_is_better": v.lower_is_better,
                # Scenario 4's own figure, from the Track reply / the publish ack.
                "from_reply": {c: by_column.get(c, {}).get("p99_ms") for c in [*candidates, "nats"]}
                if v.lower_is_better
                else None,
            }
        )
    try:
        client = version("nats-py")
    except PackageNotFoundError:
        client = None
    return {**nats, "nats_py": client, "candidates": candidates, "rows": rows}


# Journey with metrics on against off: Track calls/s in the same run (issue 14's target).
METRICS_COLUMN = "journey+metrics"
METRICS_TARGET = 0.95
# Issue 13: consumer groups process at least as many events/s as NATS's consumer, each ordering;
# issue 12: Journey's best configuration ingests page views at least as fast as NATS's publishes.
NATS_TARGET = 1.0


def metrics_overhead(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """For each scenario run with and without metrics: Track calls/s of each, and their ratio."""
    rows = []
    for key, by_server in results.items():
        off = by_server.get("journey", {})
        on = by_server.get(METRICS_COLUMN, {})
        if "calls_per_s" not in off or "calls_per_s" not in on:
            continue
        ratio = on["calls_per_s"] / off["calls_per_s"] if off["calls_per_s"] else None
        cpu_off, cpu_on = off.get("server_cpu_ms_per_call"), on.get("server_cpu_ms_per_call")
        rows.append(
            {
                "scenario": key,
                "calls_per_s_off": off["calls_per_s"],
                "calls_per_s_on": on["calls_per_s"],
                "ratio_on_to_off": ratio,
                # The server's CPU per call, on over off: the cost itself, less moved by load.
                "cpu_per_call_on_to_off": cpu_on / cpu_off if cpu_on and cpu_off else None,
                "target": f">= {METRICS_TARGET}",
                "met": None if ratio is None else ratio >= METRICS_TARGET,
            }
        )
    return rows


def document(
    scenarios: list[Scenario],
    results: dict[str, dict[str, dict[str, Any]]],
    columns: list[str],
    quick: bool,
    started: float,
    nats: dict[str, Any] | None = None,
    candidates: list[str] | None = None,
    postgres: dict[str, Any] | None = None,
    interleaved: dict[str, Any] | None = None,
    against_baseline: dict[str, Any] | None = None,
    groups_against_nats: dict[str, Any] | None = None,
    ingest_against_nats: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Everything measured, with the machine it ran on and each target's verdict.

    A target is judged on the best of the `candidates` columns (Journey's configurations:
    SQLite and PostgreSQL), and so is the ratio to the baseline. `interleaved` is metrics on
    against off, `against_baseline` Journey against the baseline, each in interleaved rounds of
    Track of 1 (bench/interleaved.py); `groups_against_nats` scenarios 11 and 12 and
    `ingest_against_nats` scenario 8 against NATS in interleaved rounds
    (bench/nats_interleaved.py).
    """
    candidates = candidates or ["journey"]
    rows = []
    for s in scenarios:
        by_server = results[s.key]
        base = by_server.get("baseline", {}).get(s.metric)
        found = best(by_server, candidates, s.metric, s.lower_is_better)
        value = None if found is None else found[1]
        rows.append(
            {
                "scenario": s.key,
                "title": s.title,
                "metric": s.metric,
                "unit": s.unit,
                "target": s.target.text,
                "met": None if value is None else s.target.check(value, base),
                "best": None if found is None else found[0],
                "ratio_to_baseline": value / base if value is not None and base else None,
                "baseline_note": s.baseline_note,
                "nats_note": s.nats_note,
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
        "candidates": candidates,
        "postgres": postgres or {"skipped": "not asked for"},
        "rows": rows,
        "versus_nats": versus_nats(results, nats or {"skipped": "not asked for"}, candidates),
        "metrics_overhead": metrics_overhead(results),
        "metrics_overhead_interleaved": _judged(interleaved, METRICS_TARGET),
        "track_against_baseline_interleaved": _judged(against_baseline, TRACK_OF_ONE_TARGET),
        "groups_against_nats_interleaved": _against_nats_judged(groups_against_nats, ORDERINGS),
        "ingest_against_nats_interleaved": _against_nats_judged(ingest_against_nats, INGEST),
    }


def _judged(interleaved: dict[str, Any] | None, target: float) -> dict[str, Any] | None:
    if interleaved is None:
        return None
    met = interleaved["median_ratio"] >= target
    return {**interleaved, "target": f">= {target}", "met": met}


def _against_nats_judged(
    ab: dict[str, Any] | None, sides: tuple[str, ...]
) -> dict[str, Any] | None:
    if ab is None or "error" in ab:
        return ab
    judged = {s: {**ab[s], "met": ab[s]["median_ratio"] >= NATS_TARGET} for s in sides}
    return {**ab, **judged, "target": f">= {NATS_TARGET} x NATS"}


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
        "| # | scenario | unit | " + " | ".join(doc["columns"]) + " | best / baseline "
        "| target | met |",
        "|---|---|---|" + "---|" * len(doc["columns"]) + "---|---|---|",
    ]
    notes = []
    for row in doc["rows"]:
        cells = [
            _figure(row["results"].get(c, {}), row["metric"], row["extra"]) for c in doc["columns"]
        ]
        ratio = f"{row['ratio_to_baseline']:.2f}" if row["ratio_to_baseline"] else "n/a"
        if row["ratio_to_baseline"] and row.get("best") and len(doc.get("candidates", [])) > 1:
            ratio += f" ({row['best']})"
        met = {True: "yes", False: "no", None: "n/a"}[row["met"]]
        lines.append(
            f"| {row['scenario']} | {row['title']} | {row['unit']} | "
            + " | ".join(cells)
            + f" | {ratio} | {row['target']} | {met} |"
        )
        if row["baseline_note"]:
            notes.append(f"- {row['scenario']}: baseline {row['baseline_note']}.")
        if row.get("nats_note") and "nats" in doc["columns"]:
            notes.append(f"- {row['scenario']}: nats {row['nats_note']}.")
    postgres = doc.get("postgres", {})
    if postgres.get("skipped") and postgres.get("url"):
        notes.append(f"- PostgreSQL columns not run: {postgres['skipped']}.")
    return "\n".join(
        [
            *lines,
            "",
            *notes,
            "",
            *_overhead_markdown(doc.get("metrics_overhead", [])),
            *_interleaved_markdown(
                doc.get("metrics_overhead_interleaved"),
                "Metrics overhead, interleaved",
                ("off", "on"),
            ),
            *_interleaved_markdown(
                doc.get("track_against_baseline_interleaved"),
                "Track of 1 against the baseline, interleaved",
            ),
            *_groups_markdown(doc.get("groups_against_nats_interleaved")),
            *_ingest_markdown(doc.get("ingest_against_nats_interleaved")),
            *_versus_markdown(doc.get("versus_nats", {})),
        ]
    )


def _interleaved_markdown(
    ab: dict[str, Any] | None, title: str, labels: tuple[str, str] | None = None
) -> list[str]:
    """One interleaved comparison (bench/interleaved.py) of A and B, named by `labels`."""
    if not ab:
        return []
    a, b = ab["a"], ab["b"]
    la, lb = labels or (a, b)
    return [
        f"### {title}",
        "",
        f"{ab['rounds']} rounds of scenario 1, both servers up, each round in a random order: "
        f"median calls/s {_number(ab['calls_per_s'][a])} {la}, {_number(ab['calls_per_s'][b])} "
        f"{lb}; median of the rounds' {lb} / {la} ratios **{ab['median_ratio']:.3f}** (target "
        f"{ab['target']}, met: {'yes' if ab['met'] else 'no'}); each round's ratio "
        f"{', '.join(f'{r:.2f}' for r in ab['ratios'])}; server CPU per call "
        f"{ab['server_cpu_ms_per_call'][a]:.3f} ms {la}, "
        f"{ab['server_cpu_ms_per_call'][b]:.3f} ms {lb}.",
        "",
    ]


def _groups_markdown(ab: dict[str, Any] | None) -> list[str]:
    if not ab:
        return []
    title = ["### Consumer groups against NATS JetStream, interleaved", ""]
    if "error" in ab:
        return [*title, f"Not measured: {ab['error']}", ""]
    rates = ab["events_per_s"]
    lines = [
        *title,
        f"{ab['rounds']} rounds of scenarios 11 and 12 and NATS's consumer, each round in a "
        "random order, each run on a fresh server and backlog: median events/s "
        f"{_number(rates['none'])} NONE, {_number(rates['session'])} SESSION, "
        f"{_number(rates['nats'])} NATS.",
        "",
        "| ordering | median of the rounds' Journey / NATS | each round | target | met |",
        "|---|---|---|---|---|",
    ]
    for ordering in ORDERINGS:
        row = ab[ordering]
        each = ", ".join(f"{r:.2f}" for r in row["ratios"])
        met = "yes" if row["met"] else "no"
        lines.append(
            f"| {ordering.upper()} | **{row['median_ratio']:.2f}** | {each} | {ab['target']} "
            f"| {met} |"
        )
    return [*lines, ""]


def _ingest_markdown(ab: dict[str, Any] | None) -> list[str]:
    if not ab:
        return []
    title = ["### Page-view ingest against NATS JetStream, interleaved", ""]
    if "error" in ab:
        return [*title, f"Not measured: {ab['error']}", ""]
    rates, row = ab["events_per_s"], ab["journey"]
    return [
        *title,
        f"{ab['rounds']} rounds of scenario 8 ({ab['seconds']:g} s of load per run), Journey "
        f"({ab['configuration']}, the best of scenario 8's columns) and NATS's publishes, each "
        "round in a random order, each run on a fresh server and database or stream: median "
        f"events/s {_number(rates['journey'])} Journey, {_number(rates['nats'])} NATS; median "
        f"of the rounds' Journey / NATS ratios **{row['median_ratio']:.2f}** (target "
        f"{ab['target']}, met: {'yes' if row['met'] else 'no'}); each round's ratio "
        f"{', '.join(f'{r:.2f}' for r in row['ratios'])}.",
        "",
    ]


def _overhead_markdown(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    lines = [
        "### Metrics overhead",
        "",
        "Track calls/s with metrics off (journey) and on (journey+metrics), in this run; and the",
        "server's CPU time per call, on over off.",
        "",
        "| # | calls/s off | calls/s on | on / off | target | met | CPU per call on / off |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ratio, cpu = (
            "n/a" if row[k] is None else f"{row[k]:.3f}"
            for k in ("ratio_on_to_off", "cpu_per_call_on_to_off")
        )
        met = {True: "yes", False: "no", None: "?"}[row["met"]]
        lines.append(
            f"| {row['scenario']} | {_number(row['calls_per_s_off'])} "
            f"| {_number(row['calls_per_s_on'])} | {ratio} | {row['target']} | {met} | {cpu} |"
        )
    return [*lines, ""]


def _versus_markdown(versus: dict[str, Any]) -> list[str]:
    if versus.get("skipped"):
        return [f"Journey against NATS JetStream: not run ({versus['skipped']})."]
    if not versus.get("rows"):
        return []
    candidates = versus.get("candidates", ["journey"])
    lines = [
        "### Journey against NATS JetStream",
        "",
        f"NATS at {versus['url']}, nats-py {versus['nats_py']}; all measured in this run. "
        "The target is Journey's best configuration's.",
        "",
        "| # | comparison | unit | " + " | ".join(candidates) + " | nats | best / nats "
        "| target | met |",
        "|---|---|---|" + "---|" * len(candidates) + "---|---|---|---|",
    ]
    for row in versus["rows"]:
        cells = []
        for name in [*candidates, "nats"]:
            value = row["nats"] if name == "nats" else row["journey"].get(name)
            cell = "n/a" if value is None else _number(value)
            if row["from_reply"] and value is not None:
                reply = row["from_reply"].get(name)
                what = "ack" if name == "nats" else "reply"
                cell += f" (from {what} {'n/a' if reply is None else _number(reply)})"
            cells.append(cell)
        ratio = "n/a" if row["ratio_best_to_nats"] is None else f"{row['ratio_best_to_nats']:.2f}"
        if row["lower_is_better"] and row["met"] is not None:
            ratio += " (no worse)" if row["met"] else " (worse)"
        if row["best"] and len(candidates) > 1 and row["ratio_best_to_nats"] is not None:
            ratio += f", {row['best']}"
        met = {True: "yes", False: "no", None: "?"}[row["met"]]
        lines.append(
            f"| {row['comparison']} | {row['title']} | {row['unit']} | "
            + " | ".join(cells)
            + f" | {ratio} | {row['target']} | {met} |"
        )
    return lines


def failures(doc: dict[str, Any]) -> list[str]:
    """Every scenario run that errored: lost, repeated or failed (slowness is never a failure)."""
    return [
        f"scenario {row['scenario']} on {name}: {result['error']}"
        for row in doc["rows"]
        for name, result in row["results"].items()
        if "error" in result
    ]
