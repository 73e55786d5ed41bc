"""Medians over rounds, the bounds and ratios the design's targets are stated in, and the files of a run.

Per scenario and contender: `rps` is the median rate of the scenario's primary stream, `p50_ms` and
`p99_ms` the median latencies of its headline stream (the same stream, but in the mixed scenario,
where the rate is the flood's and the latency the `add` probe's under the flood), `errors` the sum
over every stream and round.

CPU per answer (`cpu_per_answer`), from /proc over the measurement window, per round, then the median:
`cpu_ms_per_answer` is the front end's CPU (every process of the contender: gateway, gunicorn and its
workers, uvicorn, Flower, the floor's client processes) ÷ the answers counted in the same window;
`workers_cpu_ms_per_answer` is the CPU of the workers of the primary stream's queue ÷ its answers (per
task, for the drain; checkgate's `noop` answers share tasks, so there it is less than per task).

Bounds (bench.scenarios): `bounds` are clients / T, slots / T and the workers' drain (the drain
contender's median rate in the same run), `binds` names the lowest, `bound_rps` is its value and
`of_bound` a contender's rate over it. Ratios: `vs_fastapi`, `vs_flower` and `vs_blocking` divide by
those peers' `rps`, `efficiency` by the floor's (what the same workers drain fed by Celery's own
client). `p99_added_ms` is the contender's p99 minus the floor's: what the HTTP hop adds to the tail,
both measured from the moment a client wants to send.
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path
from typing import Any

from bench.contenders import CONTENDERS
from bench.scenarios import Scenario, binding

METRICS = ("rps", "requests", "p50_ms", "p90_ms", "p99_ms", "max_ms")
# A rate this far over its bound is flagged: the bound was measured at another moment (other load on the
# machine moves both), or is not one.
OVER = 1.03
RATIOS = (("vs_fastapi", "fastapi"), ("vs_flower", "flower"), ("vs_blocking", "blocking"), ("efficiency", "floor"))


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 3) if present else None


def _ratio(num: float | None, den: float | None) -> float | None:
    return round(num / den, 3) if num is not None and den else None


def cpu_per_answer(cell: dict, scenario: Scenario) -> dict[str, float | None]:
    """ms of CPU per answer in one cell: `front_end` (the contender's processes ÷ every answer of the
    window) and `workers` (the primary stream's queue's workers ÷ its answers); None without answers."""
    cpu, answers = cell.get("cpu_s", {}), cell.get("answers", {})

    def per(seconds: float | None, count: int | None) -> float | None:
        return round(seconds * 1000 / count, 3) if seconds is not None and count else None

    queue = scenario.stream(scenario.primary).check
    return {
        "front_end": per(cpu.get("contender"), answers.get("all")),
        "workers": per(cpu.get(f"workers_{queue}"), answers.get("primary")),
    }


def summarize(
    cells: list[dict], scenarios: list[Scenario], contenders: list[str], meta: dict[str, Any]
) -> dict[str, Any]:
    """The run's JSON: meta, then per scenario its bounds and per contender medians and ratios."""
    out: dict[str, Any] = {"schema": 2, **meta, "scenarios": {}}
    labels = meta.get("labels", {})
    transports = meta.get("worker_transports", {})
    for scenario in scenarios:
        table: dict[str, dict[str, Any]] = {}
        for name in contenders:
            mine = [c for c in cells if c["scenario"] == scenario.name and c["contender"] == name]
            if mine:
                table[name] = _row(scenario, mine, labels.get(name, CONTENDERS[name].label), name)
        slots = transports.get(scenario.transport, {}).get("slots", {})
        drain = table.get("drain", {}).get("rps")
        bounds = scenario.bounds(slots, drain)
        binds, bound = binding(bounds)
        for name, row in table.items():
            # The drain is the bound, and the bare handler runs no task: neither is measured against them.
            if not CONTENDERS[name].runs_tasks:
                row.update({key: None for key, _ in RATIOS}, of_bound=None)
                continue
            for key, peer in RATIOS:
                row[key] = _ratio(row.get("rps"), table.get(peer, {}).get("rps"))
            row["of_bound"] = _ratio(row.get("rps"), bound)
            floor_p99 = table.get("floor", {}).get("p99_ms")
            p99 = row.get("p99_ms")
            row["p99_added_ms"] = round(p99 - floor_p99, 1) if p99 is not None and floor_p99 is not None else None
        for row in table.values():
            row.setdefault("p99_added_ms", None)
        primary = scenario.stream(scenario.primary)
        formulas = scenario.bound_formulas(slots)
        out["scenarios"][scenario.name] = {
            "kind": scenario.kind,
            "description": scenario.description,
            "worker_transport": scenario.transport,
            "check": primary.check,
            "params": primary.params,
            "clients": primary.clients,
            "task_ms": round(primary.task_s * 1000),
            "window_s": scenario.window,
            "bounds": {k: round(v, 1) for k, v in bounds.items()},
            "bound_formulas": {k: formulas[k] for k in bounds},
            "binds": binds,
            "bound_rps": round(bound, 1) if bound else None,
            "streams": {s.name: {"check": s.check, "params": s.params, "clients": s.clients} for s in scenario.streams},
            "contenders": table,
        }
    return out


def _row(scenario: Scenario, cells: list[dict], label: str, name: str) -> dict[str, Any]:
    ok = [c for c in cells if c["ok"]]
    row: dict[str, Any] = {
        "label": label,
        "rounds": len(ok),
        "failed": [c["error"] for c in cells if not c["ok"] and not c.get("skipped")],
        "skipped": next((c["skipped"] for c in cells if c.get("skipped")), None),
    }
    if not ok:
        return {**row, "rps": None, "p50_ms": None, "p99_ms": None, "errors": None}
    streams = {s.name: {m: _median([c["streams"][s.name][m] for c in ok]) for m in METRICS} for s in scenario.streams}
    for s in scenario.streams:
        streams[s.name]["errors"] = sum(c["streams"][s.name]["errors"] for c in ok)
    primary, headline = streams[scenario.primary], streams[scenario.headline_latency]
    per_answer = [cpu_per_answer(c, scenario) for c in ok]
    row.update(
        rps=primary["rps"],
        p50_ms=headline["p50_ms"],
        p99_ms=headline["p99_ms"],
        errors=sum(s["errors"] for s in streams.values()),
        streams=streams,
        cpu_cores={k: _median([c["cpu_cores"].get(k) for c in ok]) for k in ok[0]["cpu_cores"]},
        cpu_ms_per_answer=_median([p["front_end"] for p in per_answer]) if CONTENDERS[name].front_end else None,
        workers_cpu_ms_per_answer=_median([p["workers"] for p in per_answer])
        if CONTENDERS[name].uses_workers
        else None,
        per_round=[{"round": c["round"], "rps": c["streams"][scenario.primary]["rps"]} for c in ok],
    )
    drains = [c["drain"] for c in ok if "drain" in c]
    if drains:
        row["drain"] = {
            "published": max(d["published"] for d in drains),
            "starved_rounds": sum(d["starved"] for d in drains),
        }
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


def _workers(seen: dict[str, Any]) -> str:
    """One worker transport's workers, as the header says them."""
    if seen.get("skipped"):
        return f"skipped ({seen['skipped']})"
    reported = f" (consumers report {seen['reported']})" if seen.get("reported") else ""
    return f"{seen['workers']}{reported}"


def _bound_cell(scen: dict[str, Any]) -> str:
    if not scen["binds"]:
        return "none"
    return f"{scen['bound_rps']:.0f} {scen['binds']}"


def bound_lines(result: dict[str, Any]) -> list[str]:
    """Per scenario, every bound, the one that binds, and how close checkgate (and the others) came to it."""
    lines = []
    for name, scen in result["scenarios"].items():
        if not scen["binds"]:
            lines.append(f"- **{name}**: no bound (identical requests may share a task: checkgate coalesces them).")
            continue
        others = ", ".join(
            f"{k} {_fmt(v, '.0f')} ({scen['bound_formulas'][k]})"
            for k, v in scen["bounds"].items()
            if k != scen["binds"]
        )
        head = (
            f"- **{name}**: **{scen['binds']}** binds at {scen['bound_rps']:.0f} req/s "
            f"({scen['bound_formulas'][scen['binds']]})" + (f"; also {others}" if others else "")
        )
        rows = scen["contenders"]
        near = [
            f"{r['label']} {_fmt(r.get('rps'))} req/s = {_fmt(r.get('of_bound'), '.0%')}"
            + (
                " (over the bound: noise between the moments they ran, or a bound that is not one)"
                if r["of_bound"] > OVER
                else ""
            )
            for c, r in rows.items()
            if CONTENDERS[c].runs_tasks and r.get("rps") is not None and r.get("of_bound") is not None
        ]
        if "drain" not in scen["bounds"] and scen["kind"] in ("unique", "sleep"):
            head += " (the drain was not measured: run the drain contender)"
        lines.append(head + (": " + "; ".join(near) if near else "") + ".")
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The run as Markdown: what it ran on, the main table, the bounds, processes 1 → N, transports,
    isolation, CPU."""
    m = result["machine"]
    transports = result.get("worker_transports", {})
    workers = "; ".join(f"{t}: {_workers(w)}" for t, w in transports.items())
    lines = [
        f"# checkgate bench {result['started_utc']}",
        "",
        f"{m['cores']} cores ({m['cpu_model']}), Python {m['python']}, RabbitMQ {m['services']['rabbitmq']}, "
        f"Redis {m['services']['redis']}, {m['wrk']}; load average {m['loadavg_start'][0]} at the start, "
        f"{m.get('loadavg_end', ['?'])[0]} at the end (other work on the machine shows here). Git {m['git']}.",
        f"Workers by transport: {workers}. Rounds: {result['options']['rounds']}, windows of "
        f"{result['options']['duration']} s, medians over rounds; errors summed. Bound: the lowest of clients / T, "
        "slots / T and the workers' drain with no front end (named after the figure). CPU ms/answer: the front "
        "end's CPU (/proc) ÷ answers, same window; workers: the queue's workers' CPU ÷ answers (per task for the "
        "drain). p99 added: p99 minus the floor's p99." + (" **Interrupted.**" if result.get("interrupted") else ""),
        "",
        "| scenario (bound req/s, binds) | contender | req/s | of bound | p50 ms | p99 ms | p99 added | errors "
        "| CPU ms/answer | workers CPU ms/answer | vs FastAPI | vs Flower | vs blocking | efficiency |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    mixed = []
    for name, scen in result["scenarios"].items():
        if scen["kind"] == "mixed":
            mixed.append((name, scen))
            continue
        for row in scen["contenders"].values():
            head = f"| {name} ({_bound_cell(scen)}) | {row['label']} |"
            if row.get("skipped") and not row["rounds"]:
                lines.append(f"{head} skipped |" + " – |" * 12)
                continue
            lines.append(
                f"{head} {_fmt(row['rps'])} | {_fmt(row.get('of_bound'), '.0%')} | "
                f"{_fmt(row['p50_ms'])} | {_fmt(row['p99_ms'])} | {_fmt(row.get('p99_added_ms'), '+.1f')} | "
                f"{_fmt(row['errors'], 'd')}{' (failed)' if row['failed'] else ''} | "
                f"{_fmt(row.get('cpu_ms_per_answer'), '.2f')} | {_fmt(row.get('workers_cpu_ms_per_answer'), '.2f')} | "
                f"{_fmt(row.get('vs_fastapi'), '.2f', '×')} | {_fmt(row.get('vs_flower'), '.2f', '×')} | "
                f"{_fmt(row.get('vs_blocking'), '.2f', '×')} | {_fmt(row.get('efficiency'), '.0%')} |"
            )
    skipped = {
        row["label"]: row["skipped"]
        for scen in result["scenarios"].values()
        for row in scen["contenders"].values()
        if row.get("skipped") and not row["rounds"]
    }
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{label}: {why}" for label, why in skipped.items()) + "."]
    lines += ["", "Bounds, the one that binds, and how close each front end came to it:", "", *bound_lines(result)]
    starved = [
        f"{name} ({row['drain']['starved_rounds']} of {row['rounds']} rounds)"
        for name, scen in result["scenarios"].items()
        for row in [scen["contenders"].get("drain", {})]
        if row.get("drain", {}).get("starved_rounds")
    ]
    if starved:
        lines += [
            "",
            "The drain ran dry before its window closed in " + ", ".join(starved) + ": its rate there is over the "
            "part of the window its queue lasted.",
        ]
    lines += _processes_table(result)
    lines += _transports_table(result)
    for name, scen in mixed:
        lines += [
            "",
            f"**{name}**: {scen['description']}; flood bound {_bound_cell(scen)} req/s.",
            "",
            "| contender | add p50 / p99 alone | add p50 / p99 flooded | add req/s flooded | flood req/s "
            "| flood of bound | CPU ms/answer | errors |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in scen["contenders"].values():
            lines.append(
                f"| {row['label']} | {_fmt(row.get('add_alone_p50_ms'))} / "
                f"{_fmt(row.get('add_alone_p99_ms'))} | {_fmt(row.get('add_flood_p50_ms'))} / "
                f"{_fmt(row.get('add_flood_p99_ms'))} | {_fmt(row.get('add_flood_rps'))} | {_fmt(row['rps'])} | "
                f"{_fmt(row.get('of_bound'), '.0%')} | {_fmt(row.get('cpu_ms_per_answer'), '.2f')} | "
                f"{_fmt(row['errors'], 'd')}{' (failed)' if row['failed'] else ''} |"
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
    names = [
        c for c in result["options"]["contenders"] if any(c in s["contenders"] for s in result["scenarios"].values())
    ]
    labels = result.get("labels", {})
    lines += ["", "CPU cores used over the window (median): contender / workers add / workers sleep / wrk.", ""]
    lines += ["| scenario | " + " | ".join(labels.get(c, CONTENDERS[c].label) for c in names) + " |"]
    lines += ["|---|" + "---:|" * len(names)]
    for name, scen in result["scenarios"].items():
        cells = []
        for contender in names:
            cpu = scen["contenders"].get(contender, {}).get("cpu_cores") or {}
            keys = ("contender", "workers_add", "workers_sleep", "loadgen")
            cells.append(" / ".join(_fmt(cpu.get(k), ".2f") for k in keys) if cpu else "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _processes_table(result: dict[str, Any]) -> list[str]:
    """checkgate with 1 and with N gateway processes, where both ran."""
    rows = []
    for name, scen in result["scenarios"].items():
        one, many = scen["contenders"].get("checkgate"), scen["contenders"].get("checkgate-multi")
        if not one or not many:
            continue
        if many.get("skipped") and not many["rounds"]:
            rows.append(f"| {name} | {_fmt(one['rps'])} | skipped | – | – | – |")
            continue
        rows.append(
            f"| {name} | {_fmt(one['rps'])} | {_fmt(many['rps'])} "
            f"| {_fmt(_ratio(many['rps'], one['rps']), '.2f', '×')} "
            f"| {_fmt(one.get('cpu_ms_per_answer'), '.2f')} | {_fmt(many.get('cpu_ms_per_answer'), '.2f')} |"
        )
    if not rows:
        return []
    n = result.get("labels", {}).get("checkgate-multi", "checkgate ×N")
    return [
        "",
        f"Gateway processes 1 → N ({n}):",
        "",
        "| scenario | 1 process req/s | N processes req/s | N / 1 | CPU ms/answer, 1 | CPU ms/answer, N |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def _transports_table(result: dict[str, Any]) -> list[str]:
    """The same scenarios on each worker transport that ran (issue #17), side by side."""
    ran = [t for t, w in result.get("worker_transports", {}).items() if not w.get("skipped")]
    if len(ran) < 2:
        return []
    rows = []
    for name, scen in result["scenarios"].items():
        if scen["worker_transport"] == ran[0] and not any(
            s["worker_transport"] != ran[0] and n.startswith(name + " [") for n, s in result["scenarios"].items()
        ):
            continue
        c = scen["contenders"]
        rows.append(
            f"| {name} | {scen['worker_transport']} | {_fmt(c.get('drain', {}).get('rps'))} | "
            f"{_fmt(c.get('drain', {}).get('workers_cpu_ms_per_answer'), '.2f')} | "
            f"{_fmt(c.get('checkgate', {}).get('rps'))} | "
            f"{_fmt(c.get('checkgate', {}).get('workers_cpu_ms_per_answer'), '.2f')} | "
            f"{_fmt(c.get('floor', {}).get('rps'))} |"
        )
    return [
        "",
        "Worker transports, same workers for every contender of a transport:",
        "",
        "| scenario | workers consume with | drain tasks/s | workers CPU ms/task (drain) | checkgate req/s "
        "| workers CPU ms/answer (checkgate) | floor req/s |",
        "|---|---|---:|---:|---:|---:|---:|",
        *rows,
    ]


def plot(result: dict[str, Any], path: Path) -> Path | None:
    """req/s and p99 against concurrency for the sleep scenarios, a line per contender and the limit."""
    # The first worker transport's (the others' scenario names say theirs).
    points = sorted(
        ((s["clients"], s) for n, s in result["scenarios"].items() if s["kind"] == "sleep" and " [" not in n),
        key=lambda p: p[0],
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
        label = result.get("labels", {}).get(contender, CONTENDERS[contender].label)
        ax_rps.plot(xs, [r.get("rps") for r in rows], marker="o", label=label)
        ax_p99.plot(xs, [r.get("p99_ms") for r in rows], marker="o", label=label)
    ax_rps.plot(xs, [s["bound_rps"] for _, s in points], "k--", label="bound")
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
