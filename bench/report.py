"""Medians over rounds, the ratios the design's targets are stated in, and the files of a run.

Per scenario and contender: `rps` is the median rate of the scenario's primary stream, `p50_ms` and
`p99_ms` the median latencies of its headline stream (the same stream, but in the mixed scenario,
where the rate is the flood's and the latency the `add` probe's under the flood), `errors` the sum
over every stream and round. Ratios: `vs_flower` and `vs_blocking` divide by those peers' `rps`,
`efficiency` by the floor's (what the same workers drain fed by Celery's own client), `of_limit` by
the physical limit min(C/T, S/T, N), N being checkgate's no-op rate in the same run — of
`noop-unique` when it ran (every request a task of its own; `noop` repeats one request, which
checkgate coalesces), else of `noop`. `p99_added_ms` is the contender's p99 minus the floor's: what
the HTTP hop adds to the tail, both measured from the moment a client wants to send.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.contenders import CONTENDERS
from bench.scenarios import Scenario

METRICS = ("rps", "requests", "p50_ms", "p90_ms", "p99_ms", "max_ms")
RATIOS = (("vs_flower", "flower"), ("vs_blocking", "blocking"), ("efficiency", "floor"))


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num is not None and den else None


def summarize(
    cells: list[dict], scenarios: list[Scenario], contenders: list[str], sleep_slots: int, meta: dict[str, Any]
) -> dict[str, Any]:
    """The run's JSON: meta, then per scenario the limit and per contender medians and ratios."""
    out: dict[str, Any] = {"schema": 1, **meta, "sleep_slots": sleep_slots, "scenarios": {}}
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for scenario in scenarios:
        rows[scenario.name] = {}
        for name in contenders:
            mine = [c for c in cells if c["scenario"] == scenario.name and c["contender"] == name]
            rows[scenario.name][name] = _row(scenario, mine, CONTENDERS[name].label)
    capacity_from = "noop-unique" if "noop-unique" in rows else "noop"
    noop = rows.get(capacity_from, {}).get("checkgate", {}).get("rps")
    out["noop_capacity_rps"] = noop
    out["noop_capacity_from"] = capacity_from
    for scenario in scenarios:
        limit = scenario.limit(sleep_slots, noop)
        if scenario.kind == "noop" and capacity_from != "noop":
            limit = None  # identical requests are coalesced: N, a rate of tasks, does not bound them
        table = rows[scenario.name]
        for row in table.values():
            for key, peer in RATIOS:
                row[key] = _ratio(row.get("rps"), table.get(peer, {}).get("rps"))
            row["of_limit"] = _ratio(row.get("rps"), limit)
            floor_p99 = table.get("floor", {}).get("p99_ms")
            p99 = row.get("p99_ms")
            row["p99_added_ms"] = round(p99 - floor_p99, 1) if p99 is not None and floor_p99 is not None else None
        primary = scenario.stream(scenario.primary)
        out["scenarios"][scenario.name] = {
            "kind": scenario.kind,
            "description": scenario.description,
            "check": primary.check,
            "params": primary.params,
            "clients": primary.clients,
            "task_ms": round(primary.task_s * 1000),
            "window_s": scenario.window,
            "limit_rps": round(limit, 1) if limit else None,
            "streams": {s.name: {"check": s.check, "params": s.params, "clients": s.clients} for s in scenario.streams},
            "contenders": table,
        }
    return out


def _row(scenario: Scenario, cells: list[dict], label: str) -> dict[str, Any]:
    ok = [c for c in cells if c["ok"]]
    row: dict[str, Any] = {
        "label": label,
        "rounds": len(ok),
        "failed": [c["error"] for c in cells if not c["ok"]],
    }
    if not ok:
        return {**row, "rps": None, "p50_ms": None, "p99_ms": None, "errors": None}
    streams = {s.name: {m: _median([c["streams"][s.name][m] for c in ok]) for m in METRICS} for s in scenario.streams}
    for s in scenario.streams:
        streams[s.name]["errors"] = sum(c["streams"][s.name]["errors"] for c in ok)
    primary, headline = streams[scenario.primary], streams[scenario.headline_latency]
    row.update(
        rps=primary["rps"],
        p50_ms=headline["p50_ms"],
        p99_ms=headline["p99_ms"],
        errors=sum(s["errors"] for s in streams.values()),
        streams=streams,
        cpu_cores={k: _median([c["cpu_cores"].get(k) for c in ok]) for k in ok[0]["cpu_cores"]},
        per_round=[{"round": c["round"], "rps": c["streams"][scenario.primary]["rps"]} for c in ok],
    )
    types = sorted({t for c in ok for t in c.get("self_time", {})})
    if types:
        # What the contender reports of its own time per answer (checkgate: /metrics), per check type.
        row["self_time"] = {
            t: {q: _median([c.get("self_time", {}).get(t, {}).get(q) for c in ok]) for q in ("p50_ms", "p99_ms")}
            for t in types
        }
    if scenario.kind == "mixed":
        row.update(
            add_alone_p50_ms=streams["add_alone"]["p50_ms"],
            add_alone_p99_ms=streams["add_alone"]["p99_ms"],
            add_flood_p50_ms=streams["add_flood"]["p50_ms"],
            add_flood_p99_ms=streams["add_flood"]["p99_ms"],
            add_flood_rps=streams["add_flood"]["rps"],
        )
    return row


def _fmt(value: Any, spec: str = ".1f", suffix: str = "") -> str:
    if value is None:
        return "–"
    return f"{value:{spec}}{suffix}"


def markdown(result: dict[str, Any]) -> str:
    """The run as Markdown: what it ran on, the throughput table, the isolation table."""
    m = result["machine"]
    lines = [
        f"# checkgate bench {result['started_utc']}",
        "",
        f"{m['cores']} cores ({m['cpu_model']}), Python {m['python']}, RabbitMQ {m['services']['rabbitmq']}, "
        f"Redis {m['services']['redis']}, {m['wrk']}; load average {m['loadavg_start'][0]} at the start, "
        f"{m.get('loadavg_end', ['?'])[0]} at the end (other work on the machine shows here). Git {m['git']}.",
        f"Workers: {result['workers']}. Rounds: {result['options']['rounds']}, windows of "
        f"{result['options']['duration']} s, medians over rounds; errors summed. "
        f"N (checkgate no-op rate, {result.get('noop_capacity_from', 'noop')}) = "
        f"{_fmt(result['noop_capacity_rps'], '.0f')} req/s. p99 added: p99 minus the floor's p99."
        + (" **Interrupted.**" if result.get("interrupted") else ""),
        "",
        "| scenario | contender | req/s | p50 ms | p99 ms | p99 added | errors | of limit | vs Flower | vs blocking "
        "| efficiency |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mixed = []
    for name, scen in result["scenarios"].items():
        if scen["kind"] == "mixed":
            mixed.append((name, scen))
            continue
        limit = _fmt(scen["limit_rps"], ".0f")
        for contender, row in scen["contenders"].items():
            lines.append(
                f"| {name} (limit {limit}) | {CONTENDERS[contender].label} | {_fmt(row['rps'])} | "
                f"{_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | {_fmt(row.get('p99_added_ms'), '+.1f')} | "
                f"{_fmt(row['errors'], 'd')}"
                f"{' (failed)' if row['failed'] else ''} | {_fmt(row.get('of_limit'), '.0%')} | "
                f"{_fmt(row.get('vs_flower'), '.2f', '×')} | {_fmt(row.get('vs_blocking'), '.2f', '×')} | "
                f"{_fmt(row.get('efficiency'), '.0%')} |"
            )
    for name, scen in mixed:
        lines += [
            "",
            f"**{name}**: {scen['description']}; flood limit {_fmt(scen['limit_rps'], '.0f')} req/s.",
            "",
            "| contender | add p50 / p99 alone | add p50 / p99 flooded | add req/s flooded | flood req/s "
            "| flood of limit | errors |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for contender, row in scen["contenders"].items():
            lines.append(
                f"| {CONTENDERS[contender].label} | {_fmt(row.get('add_alone_p50_ms'))} / "
                f"{_fmt(row.get('add_alone_p99_ms'))} | {_fmt(row.get('add_flood_p50_ms'))} / "
                f"{_fmt(row.get('add_flood_p99_ms'))} | {_fmt(row.get('add_flood_rps'))} | {_fmt(row['rps'])} | "
                f"{_fmt(row.get('of_limit'), '.0%')} | {_fmt(row['errors'], 'd')}"
                f"{' (failed)' if row['failed'] else ''} |"
            )
    own = [
        f"{name} {t} ≤ {_fmt(q['p50_ms'], 'g')} / ≤ {_fmt(q['p99_ms'], 'g')} ms"
        for name, scen in result["scenarios"].items()
        for t, q in (scen["contenders"].get("checkgate", {}).get("self_time") or {}).items()
    ]
    if own:
        lines += [
            "",
            "checkgate's own time per answer, p50 / p99 (its `checkgate_gateway_overhead_seconds` histogram over "
            "the window: the request but the time its task was with broker, worker and Redis; bucket bounds, "
            "medians over rounds): " + "; ".join(own) + ".",
        ]
    lines += ["", "CPU cores used over the window (median): contender / workers add / workers sleep / wrk.", ""]
    lines += ["| scenario | " + " | ".join(CONTENDERS[c].label for c in result["options"]["contenders"]) + " |"]
    lines += ["|---|" + "---:|" * len(result["options"]["contenders"])]
    for name, scen in result["scenarios"].items():
        cells = []
        for contender in result["options"]["contenders"]:
            cpu = scen["contenders"].get(contender, {}).get("cpu_cores") or {}
            keys = ("contender", "workers_add", "workers_sleep", "loadgen")
            cells.append(" / ".join(_fmt(cpu.get(k), ".2f") for k in keys))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """req/s and p99 against concurrency for the sleep scenarios, a line per contender and the limit."""
    points = sorted(
        ((s["clients"], s) for s in result["scenarios"].values() if s["kind"] == "sleep"), key=lambda p: p[0]
    )
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    fig, (ax_rps, ax_p99) = plt.subplots(1, 2, figsize=(11, 4.2))
    xs = [c for c, _ in points]
    for contender in result["options"]["contenders"]:
        rows = [s["contenders"].get(contender, {}) for _, s in points]
        label = CONTENDERS[contender].label
        ax_rps.plot(xs, [r.get("rps") for r in rows], marker="o", label=label)
        ax_p99.plot(xs, [r.get("p99_ms") for r in rows], marker="o", label=label)
    ax_rps.plot(xs, [s["limit_rps"] for _, s in points], "k--", label="physical limit")
    task_ms = points[0][1]["task_ms"]
    ax_rps.set(xlabel="clients", ylabel="req/s", title=f"throughput, {task_ms} ms task")
    ax_p99.set(xlabel="clients", ylabel="p99 latency, ms", title="p99 latency")
    for ax in (ax_rps, ax_p99):
        ax.set_xscale("log")
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.grid(True, alpha=0.3)
        # Rates and latencies span orders of magnitude between contenders and concurrency levels.
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(ScalarFormatter())
        ax.yaxis.set_minor_formatter(NullFormatter())
    ax_rps.legend(fontsize=8)
    fig.suptitle(f"checkgate bench {result['started_utc']} ({result['machine']['cores']} cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(result: dict[str, Any], out: Path, stamp: str, latest: str, plots: bool) -> list[Path]:
    """<stamp>.json, <latest>.json, <latest>.md and, with plots, <stamp>.png and <latest>.png."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stamp}.json", out / f"{latest}.json", out / f"{latest}.md"]
    text = json.dumps(result, indent=2, default=str) + "\n"
    paths[0].write_text(text)
    paths[1].write_text(text)
    paths[2].write_text(markdown(result))
    try:
        plotted = plots and plot(result, out / f"{stamp}.png")
    except ImportError:  # matplotlib is an optional extra
        print("bench: matplotlib is not installed, no plots")
        plotted = None
    if plotted:
        shutil.copyfile(out / f"{stamp}.png", out / f"{latest}.png")
        paths += [out / f"{stamp}.png", out / f"{latest}.png"]
    return paths
