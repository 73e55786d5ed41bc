"""The run loop of `python -m bench`: rounds × worker transports × scenarios × contenders.

Within a round every scenario is run against every contender that runs its kind, in an order rotated
from round to round (drift on a shared machine then hits every contender alike); the report takes
medians over rounds. Each cell starts its contender afresh, warms it up with checked requests, runs the
load, samples the CPU of every process group over the measurement window, stops the contender and
empties the queues. Every wait is bounded; every process is stopped on the way out, Ctrl-C included.

The workers are started once per worker transport (`--worker-transport`, issue #17: py-amqp or
librabbitmq consumers, the same workers for every contender), and again only when a round moves to
the other transport (the order alternates by round, so each switch serves two rounds). The first
transport runs every scenario; the others run `noop-unique` and the sleep scenario with the most
clients against checkgate, the floor and the drain (TRANSPORT_KINDS, TRANSPORT_CONTENDERS), under
scenario names that carry the transport. A transport that cannot run here (librabbitmq not
importable, or workers that consume with something else) is skipped, saying why.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib.util
import math
import os
import resource
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import report, scenarios
from bench.contenders import CONTENDERS, CheckgateMulti, Contender, Direct, DirectRun, Floor, Skip
from bench.load import Stats, WrkRun, start_wrk, wrk_path
from bench.machine import machine_info
from bench.stack import BACKEND_URL, BROKER_URL, ROOT, WORKER_TRANSPORTS, BenchStack, group_cpu_seconds

DEFAULT_OUT = ROOT / "bench" / "results"
# Contender start, warm-up, stop and settling, per cell, for the time estimate.
CELL_OVERHEAD_S = 7.0
# What a worker transport after the first is run with (issue #17: drain, noop-unique, sleep@1000).
TRANSPORT_KINDS = ("unique", "sleep")
TRANSPORT_CONTENDERS = ("checkgate", "floor", "drain")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="checkgate vs the blocking Flask gateway, Flower's API, FastAPI, a bare Tornado handler, Celery's "
        "own client and the workers alone, same workers.",
    )
    add = parser.add_argument
    add("--rounds", type=int, help="rounds (each runs every cell once; medians over rounds) [3]")
    add("--duration", type=int, help="measurement window of a cell, seconds [15]")
    add("--scenarios", help=f"comma-separated kinds among {','.join(scenarios.KINDS)} [all]")
    add("--contenders", help=f"comma-separated among {','.join(CONTENDERS)} [all]")
    add("--sleep-clients", help="concurrency levels of the sleep scenario [60,1000]")
    add("--sleep-ms", type=int, help=f"task time of the sleep scenario [{scenarios.SLEEP_MS}]")
    add("--noop-clients", type=int, help=f"clients of the no-op scenario [{scenarios.NOOP_CLIENTS}]")
    add("--flood-clients", type=int, default=scenarios.FLOOD_CLIENTS, help="clients flooding sleep in the mixed run")
    add("--flood-ms", type=int, default=scenarios.FLOOD_MS, help="task time of the flood in the mixed run")
    add("--sleep-procs", type=int, default=2, help="worker processes sharing the sleep slots [2, as supervisord]")
    add("--floor-procs", type=int, default=0, help="floor processes (0: 2 to 4 by clients)")
    add("--request-timeout", type=int, default=30, help="seconds before wrk counts a request as timed out")
    add(
        "--gateway-processes",
        type=int,
        default=CheckgateMulti.processes,
        help=f"gateway processes of the checkgate-multi contender [{CheckgateMulti.processes}: the cores, at least 2]",
    )
    add(
        "--worker-transport",
        help=f"comma-separated AMQP clients the workers consume with, among {','.join(WORKER_TRANSPORTS)}; the "
        "first runs everything, the others noop-unique and the largest sleep [pyamqp,librabbitmq; smoke: pyamqp]",
    )
    add("--out", type=Path, default=DEFAULT_OUT, help="where results go [bench/results]")
    add("--no-plots", action="store_true", help="skip the PNG plots")
    add("--broker", default=BROKER_URL, help="RabbitMQ URL (127.0.0.1 only)")
    add("--backend", default=BACKEND_URL, help="Redis URL of the bench's own db (127.0.0.1 only)")
    add(
        "--smoke",
        action="store_true",
        help="a tiny run of the harness: checkgate and the drain, few clients, 2 s cells",
    )
    add("--cleanup", metavar="PREFIX", help="only delete the queues and results of a killed run (prefix cgb…_)")
    args = parser.parse_args(argv)

    # --smoke changes the defaults, not what was given explicitly.
    smoke = {
        "rounds": 1,
        "duration": 2,
        "scenarios": "unique,sleep",
        "contenders": "checkgate,checkgate-flower-api,drain",
        "sleep_clients": "8",
        "sleep_ms": 100,
        "noop_clients": 4,
        "worker_transport": "pyamqp",
    }
    full = {
        "rounds": 3,
        "duration": 15,
        "scenarios": ",".join(scenarios.KINDS),
        "contenders": ",".join(CONTENDERS),
        "sleep_clients": ",".join(map(str, scenarios.SLEEP_CLIENTS)),
        "sleep_ms": scenarios.SLEEP_MS,
        "noop_clients": scenarios.NOOP_CLIENTS,
        "worker_transport": ",".join(WORKER_TRANSPORTS),
    }
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.scenarios = _names(args.scenarios, scenarios.KINDS, parser)
    args.contenders = _names(args.contenders, tuple(CONTENDERS), parser)
    args.worker_transport = _names(args.worker_transport, WORKER_TRANSPORTS, parser)
    args.sleep_clients = [int(c) for c in args.sleep_clients.split(",") if c.strip()]
    Floor.procs = args.floor_procs
    if args.gateway_processes < 2:
        parser.error("--gateway-processes must be at least 2 (checkgate is the 1-process contender)")
    CheckgateMulti.processes = args.gateway_processes
    if args.rounds < 1 or args.duration < 1:
        parser.error("--rounds and --duration must be at least 1")
    return args


def _names(raw: str, known: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    names = [n.strip() for n in raw.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        parser.error(f"unknown or no names {unknown}; known: {', '.join(known)}")
    return names


def raise_fd_limit(needed: int) -> int:
    """Raise this process's (and so its children's) open-file limit; wrk and the peers hold a socket per client."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if target < needed:
        raise SystemExit(f"bench: needs {needed} open files, the hard limit is {target} (ulimit -Hn)")
    return target


def wait_until(when: float) -> None:
    delay = when - time.time()
    if delay > 0:
        time.sleep(delay)


class CpuMeter:
    """CPU seconds of named process groups between two samples (from /proc: user + system, every live
    process of each group)."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.at = 0.0

    def sample(self, groups: dict[str, list[int]]) -> dict[str, float]:
        return {name: sum(group_cpu_seconds(g) for g in pgids) for name, pgids in groups.items()}

    def start(self, groups: dict[str, list[int]]) -> None:
        self.first, self.at = self.sample(groups), time.time()

    def seconds(self, groups: dict[str, list[int]]) -> tuple[dict[str, float], float]:
        """(CPU seconds each group used since `start`, wall seconds since `start`)."""
        last, elapsed = self.sample(groups), max(1e-6, time.time() - self.at)
        return {name: round(last[name] - self.first.get(name, 0.0), 3) for name in last}, elapsed


def answers_in_window(scenario: scenarios.Scenario, stats: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Answers counted in the window the CPU was sampled over (the primary stream's): `primary`, the
    primary stream's; `all`, every stream measured over that window (the mixed scenario's flood and probe)."""
    window_at = scenario.stream(scenario.primary).window_at
    same = [s.name for s in scenario.streams if math.ceil(s.window_at) == math.ceil(window_at)]
    return {"primary": stats[scenario.primary]["requests"], "all": sum(stats[n]["requests"] for n in same)}


def run_cell(stack: BenchStack, contender: Contender, scenario: scenarios.Scenario, cell: int, args: Any) -> dict:
    """Run one scenario against one contender; the measured stats per stream, the CPU used (seconds and
    cores, per process group) and the answers it was used for. Raises Skip when the contender cannot run."""
    wrk_runs: list[WrkRun] = []
    floor_run: DirectRun | None = None
    meter = CpuMeter()
    readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="self-time")
    try:
        contender.start(cell)
        contender.warm(scenario.streams)
        if isinstance(contender, Direct):
            floor_run = contender.launch(scenario)
        # The contender's own histogram, read when the window opens and when it closes: like the rate,
        # it leaves out the ramp-up. Read from a thread: a contender saturated by a thousand clients may
        # take seconds to answer, and the schedule of the cell must not wait for it.
        own: dict[str, Future[dict[str, list[tuple[float, int]]] | None]] = {}
        t0 = time.time() + 0.2
        window_of = {s.name: math.ceil(t0 + s.window_at) for s in scenario.streams}
        window_start = window_of[scenario.primary]

        def groups() -> dict[str, list[int]]:
            mine = floor_run.pgids if floor_run else contender.pgids()
            out = {"contender": [g for g in mine if g], **{f"workers_{q}": g for q, g in stack.worker_pgids().items()}}
            out["loadgen"] = [r.pgid for r in wrk_runs]
            return out

        events: list[tuple[float, Callable[[], None]]] = []
        if floor_run is not None:
            floor_run.go(t0)
        else:
            for stream in scenario.streams:
                target = contender.target(stream)

                def launch(stream: scenarios.Stream = stream, target: Any = target) -> None:
                    run = start_wrk(
                        stream.name,
                        target,
                        stream.clients,
                        window_of[stream.name],
                        scenario.window,
                        args.request_timeout,
                        ramp_s=stream.ramp_s,
                    )
                    wrk_runs.append(run)

                events.append((t0 + stream.start, launch))
        events.append((window_start, lambda: meter.start(groups())))
        events.append((window_start, lambda: own.update(before=readers.submit(contender.self_time))))
        cpu: dict[str, float] = {}
        elapsed: list[float] = []

        def sample_end() -> None:
            used, wall = meter.seconds(groups())
            cpu.update(used)
            elapsed.append(wall)

        events.append((window_start + scenario.window, sample_end))
        events.append((window_start + scenario.window, lambda: own.update(after=readers.submit(contender.self_time))))
        for when, action in sorted(events, key=lambda e: e[0]):
            wait_until(when)
            action()
        stats: dict[str, dict[str, Any]] = {}
        if floor_run is not None:
            stats = floor_run.result(timeout=60 + scenario.window)
        for run in wrk_runs:
            stats[run.name] = run.result(timeout=args.request_timeout + 30).to_dict()
        stack.check_alive()
        drain = stats.pop("_drain", None)
        wall = elapsed[0] if elapsed else float(scenario.window)
        cell = {
            "ok": True,
            "streams": stats,
            "cpu_s": cpu,
            "cpu_cores": {k: round(v / wall, 2) for k, v in cpu.items()},
            "answers": answers_in_window(scenario, stats),
        }
        if drain is not None:
            cell["drain"] = drain
        before, after = (_reading(own.get(when)) for when in ("before", "after"))
        if before is not None and after is not None:
            cell["self_time"] = self_time_quantiles(before, after)
        return cell
    finally:
        # Before the next cell spawns processes (with preexec_fn, which wants no other thread busy).
        readers.shutdown(wait=True, cancel_futures=True)
        for run in wrk_runs:
            run.kill()
        if floor_run is not None:
            floor_run.kill()
        contender.stop()
        stack.settle(scenario.max_task_s)


def _reading(future: Future[Any] | None, timeout: float = 60.0) -> Any:
    """The result of a self-time read, or None when it failed or did not come in time."""
    if future is None:
        return None
    try:
        return future.result(timeout=timeout)
    except Exception as exc:  # an observer's failure must not fail the cell it observes
        print(f"    (checkgate's own-time histogram not read: {exc!r})", flush=True)
        return None


def bucket_quantile(cumulative: list[tuple[float, int]], q: float) -> float | None:
    """Upper bound of the bucket holding the q-quantile of cumulative (le, count) pairs ending with
    (inf, total) — a histogram's, or the difference of two readings of one; None when empty or beyond
    the last finite bound (a bound, not an interpolation: the figure the report gives is "≤ bound")."""
    total = cumulative[-1][1] if cumulative else 0
    if total <= 0:
        return None
    le = next(le for le, n in cumulative if n >= q * total)
    return None if math.isinf(le) else le


def self_time_quantiles(
    before: dict[str, list[tuple[float, int]]], after: dict[str, list[tuple[float, int]]]
) -> dict[str, dict[str, float | None]]:
    """Per check type, the answers counted during the cell and the bucket bounds (ms) holding their
    p50 and p99 (None beyond the last bound) — the contender's own time per answer, as it reports it."""
    out: dict[str, dict[str, float | None]] = {}
    for type_name, buckets in after.items():
        old = dict(before.get(type_name, []))
        delta = [(le, n - old.get(le, 0)) for le, n in buckets]
        count = delta[-1][1] if delta else 0
        if count <= 0:
            continue
        p50, p99 = (bucket_quantile(delta, q) for q in (0.5, 0.99))
        out[type_name] = {
            "count": count,
            "p50_ms": None if p50 is None else round(p50 * 1000, 3),
            "p99_ms": None if p99 is None else round(p99 * 1000, 3),
        }
    return out


def warm_workers(stack: BenchStack, sleep_slots: int) -> None:
    """Give every worker thread a task before the first cell.

    A thread-pool worker creates its threads, and each thread its own result-backend connection, on
    first use: whichever contender came first would pay for that.
    """
    streams = (
        scenarios.Stream("sleep", "sleep", {"ms": 500}, sleep_slots, start=0.0, window_at=0.5, task_s=0.5),
        scenarios.Stream("add", "add", {"x": 1, "y": 2}, 4, start=0.0, window_at=0.5),
    )
    floor = Floor(stack)
    floor.start(0)
    run = floor.launch(scenarios.Scenario("warm-up", "warm", "workers' warm-up", streams, window=2, primary="sleep"))
    try:
        run.go(time.time() + 0.2)
        run.result(timeout=60)
    finally:
        run.kill()
        stack.settle(0.5)


def progress_line(cell: dict, scenario: scenarios.Scenario) -> str:
    """One line per cell: the rate and latency that matter for the scenario, and the CPU used."""
    head = f"[round {cell['round']}] {scenario.name:<10} {cell['contender']:<10}"
    if cell.get("skipped"):
        return f"{head} skipped: {cell['skipped']}"
    if not cell["ok"]:
        return f"{head} FAILED: {cell['error'][:300]}"
    primary = Stats(**cell["streams"][scenario.primary])
    latency = Stats(**cell["streams"][scenario.headline_latency])
    errors = sum(s["errors"] for s in cell["streams"].values())
    cpu = " ".join(f"{k.replace('workers_', 'w:')} {v:.2f}" for k, v in cell["cpu_cores"].items())
    per_answer = report.cpu_per_answer(cell, scenario)
    mine = per_answer.get("front_end")
    cost = f"  CPU/answer {mine:.2f} ms" if mine is not None and CONTENDERS[cell["contender"]].front_end else ""
    if scenario.kind == "mixed":
        alone = Stats(**cell["streams"]["add_alone"])
        what = f"flood {primary.rps:8.1f} req/s  add p99 alone {_ms(alone.p99_ms)} → flooded {_ms(latency.p99_ms)} ms"
    elif "drain" in cell:
        starved = "  STARVED (more tasks next round)" if cell["drain"]["starved"] else ""
        what = f"{primary.rps:8.1f} tasks/s of {cell['drain']['published']} published{starved}"
    else:
        what = f"{primary.rps:8.1f} req/s  p50 {_ms(latency.p50_ms)} ms  p99 {_ms(latency.p99_ms)} ms"
    return f"{head} {what}  errors {errors}{cost}  cores: {cpu}  ({cell['elapsed_s']:.0f} s)"


def _ms(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.1f}"


def for_transport(scen: list[scenarios.Scenario], transport: str, first: bool) -> list[scenarios.Scenario]:
    """The scenarios run on the workers of `transport`: all of them, named as given, for the first
    transport; for the others noop-unique and the sleep scenario with the most clients, named
    `<name> [<transport>]`."""
    if first:
        return [dataclasses.replace(sc, transport=transport) for sc in scen]
    sleeps = [sc for sc in scen if sc.kind == "sleep"]
    largest = max(sleeps, key=lambda sc: sc.stream(sc.primary).clients) if sleeps else None
    keep = [sc for sc in scen if sc.kind in TRANSPORT_KINDS and (sc.kind != "sleep" or sc is largest)]
    return [dataclasses.replace(sc, name=f"{sc.name} [{transport}]", transport=transport) for sc in keep]


def transport_unavailable(transport: str) -> str | None:
    """Why the workers cannot consume with `transport` here, or None."""
    if transport == "librabbitmq" and importlib.util.find_spec("librabbitmq") is None:
        return "librabbitmq is not importable here (the [librabbitmq] extra, issue #17)"
    return None


class Workers:
    """The workers of the transport being run, started when a round moves to another transport."""

    def __init__(self, stack: BenchStack, sleep_slots: int, sleep_procs: int) -> None:
        self.stack, self.sleep_slots, self.sleep_procs = stack, sleep_slots, sleep_procs
        self.current: str | None = None
        # transport → what ran: its workers and the transports they reported, or why it was skipped.
        self.seen: dict[str, dict[str, Any]] = {}

    def use(self, transport: str) -> bool:
        """Workers consuming with `transport` up and warm; False (and why, in `seen`) when it cannot run."""
        if self.seen.get(transport, {}).get("skipped"):
            return False
        if self.current == transport:
            return True
        self.stack.stop_workers()
        self.current = None
        why = transport_unavailable(transport)
        if why is None:
            try:
                workers = self.stack.start_workers(self.sleep_slots, self.sleep_procs, transport)
                # Without librabbitmq nothing but py-amqp can consume: no need to ask (a few seconds).
                reported = self.stack.verify_transport() if transport_unavailable("librabbitmq") is None else {}
                warm_workers(self.stack, self.sleep_slots)
            except Exception as exc:  # a transport that cannot run here must not cost the others
                why = f"{type(exc).__name__}: {str(exc)[:500]}"
                self.stack.stop_workers()
        if why is not None:
            self.seen[transport] = {"skipped": why}
            print(f"worker transport {transport}: skipped: {why}", flush=True)
            return False
        self.current = transport
        self.seen[transport] = {"workers": workers, "reported": reported, "slots": dict(self.stack.slots)}
        print(f"workers up and warm on {transport} ({reported}): {workers}", flush=True)
        return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.cleanup:
        if not args.cleanup.startswith("cgb"):
            raise SystemExit("bench: --cleanup takes a bench prefix (cgb<hex>_)")
        BenchStack(Path(tempfile.gettempdir()), args.broker, args.backend, prefix=args.cleanup).cleanup()
        return 0
    wrk_path()
    scen = scenarios.build(
        args.scenarios,
        args.duration,
        args.sleep_clients,
        noop_clients=args.noop_clients,
        sleep_ms=args.sleep_ms,
        flood_clients=args.flood_clients,
        flood_ms=args.flood_ms,
    )
    plan = {t: for_transport(scen, t, first=n == 0) for n, t in enumerate(args.worker_transport)}

    def contenders_of(scenario: scenarios.Scenario, first: bool) -> list[str]:
        names = [c for c in args.contenders if scenario.kind in CONTENDERS[c].kinds]
        return names if first else [c for c in names if c in TRANSPORT_CONTENDERS]

    cells_of = {sc.name: contenders_of(sc, t == args.worker_transport[0]) for t, scs in plan.items() for sc in scs}
    all_scen = [sc for scs in plan.values() for sc in scs]
    sleep_slots = max(scenarios.sleep_slots_needed(scen), 200)
    max_clients = max(sum(s.clients for s in sc.streams) for sc in scen)
    raise_fd_limit(4 * max_clients + 1024)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    args.out.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(args.out / f"{stamp}-logs", args.broker, args.backend)
    estimate = args.rounds * sum(len(cells_of[sc.name]) * (sc.end + CELL_OVERHEAD_S) for sc in all_scen)
    print(
        f"bench {stamp}: {len(all_scen)} scenarios, {sum(map(len, cells_of.values()))} cells × {args.rounds} rounds "
        f"(worker transports {', '.join(args.worker_transport)}), ~{estimate / 60:.0f} min; prefix {stack.prefix}, "
        f"logs in {stack.logdir}",
        flush=True,
    )

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    # Also when started in the background, where SIGINT arrives ignored: kill -INT must stop it cleanly.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = datetime.now(UTC)
    machine = machine_info(args.broker, args.backend)
    cells: list[dict] = []
    workers = Workers(stack, sleep_slots, args.sleep_procs)
    interrupted = False
    try:
        cell_no = 0
        for round_no in range(1, args.rounds + 1):
            # Alternate the transports' order, so that each switch of workers serves two rounds.
            transports = args.worker_transport if round_no % 2 else args.worker_transport[::-1]
            for transport in transports:
                if not workers.use(transport):
                    continue
                for scenario in plan[transport]:
                    # Rotate the order every round so no contender always runs first (or right after the floods).
                    names = cells_of[scenario.name]
                    shift = (round_no - 1) % max(1, len(names))
                    for name in names[shift:] + names[:shift]:
                        cell_no += 1
                        begun = time.monotonic()
                        record: dict[str, Any] = {"round": round_no, "scenario": scenario.name, "contender": name}
                        # A second try: on a shared machine a cell can fail for reasons of its own (a
                        # process killed from outside); a peer that is really broken fails twice.
                        for attempt in (1, 2):
                            try:
                                record.update(run_cell(stack, CONTENDERS[name](stack), scenario, cell_no, args))
                                break
                            except Skip as exc:
                                record.update(ok=False, skipped=str(exc))
                                break
                            except Exception as exc:  # one broken cell must not cost the whole run
                                record.update(ok=False, error=f"{type(exc).__name__}: {exc}")
                                if attempt == 1:
                                    print(f"    {scenario.name} {name} failed, trying again: {record['error'][:300]}")
                                    record["first_error"] = record.pop("error")
                                    cell_no += 1
                        record["elapsed_s"] = round(time.monotonic() - begun, 1)
                        cells.append(record)
                        print(progress_line(record, scenario), flush=True)
    except KeyboardInterrupt:
        interrupted = True
        print("interrupted: stopping every process and writing what was measured", flush=True)
    finally:
        # Ctrl-C again must not leave processes behind: ignore it while cleaning up.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            stack.stop_all()
            stack.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)

    machine["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    result = report.summarize(
        cells,
        [sc for sc in all_scen if any(c["scenario"] == sc.name for c in cells)],
        args.contenders,
        meta={
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine,
            "worker_transports": workers.seen,
            "labels": {name: CONTENDERS[name].describe() for name in args.contenders},
            "queue_prefix": stack.prefix,
            "interrupted": interrupted,
        },
    )
    paths = report.write(
        result, args.out, stamp, latest="latest-smoke" if args.smoke else "latest", plots=not args.no_plots
    )
    print(report.markdown(result), flush=True)
    print("written: " + ", ".join(str(p) for p in paths), flush=True)
    failed = [c for c in cells if not c["ok"] and not c.get("skipped")]
    return 1 if interrupted or failed or not cells else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
