"""The run loop of `python -m bench`: workers up once, then rounds × scenarios × contenders.

Within a round every scenario is run against every contender, in an order rotated from round to
round (drift on a shared machine then hits every contender alike); the report takes medians over
rounds. Each cell starts its contender afresh, warms it up with checked requests, runs the load,
samples the CPU of every process group over the measurement window, stops the contender and empties
the queues. Every wait is bounded; every process is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import contextlib
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
from bench.contenders import CONTENDERS, Contender, Floor, FloorRun
from bench.load import Stats, WrkRun, start_wrk, wrk_path
from bench.machine import machine_info
from bench.stack import BACKEND_URL, BROKER_URL, ROOT, BenchStack, group_cpu_seconds

DEFAULT_OUT = ROOT / "bench" / "results"
# Contender start, warm-up, stop and settling, per cell, for the time estimate.
CELL_OVERHEAD_S = 7.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="checkgate vs the blocking Flask gateway, Flower's API and Celery's own client, same workers.",
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
    add("--out", type=Path, default=DEFAULT_OUT, help="where results go [bench/results]")
    add("--no-plots", action="store_true", help="skip the PNG plots")
    add("--broker", default=BROKER_URL, help="RabbitMQ URL (127.0.0.1 only)")
    add("--backend", default=BACKEND_URL, help="Redis URL of the bench's own db (127.0.0.1 only)")
    add("--smoke", action="store_true", help="a tiny run (< 60 s): checkgate and the floor, few clients, 2 s cells")
    add("--cleanup", metavar="PREFIX", help="only delete the queues and results of a killed run (prefix cgb…_)")
    args = parser.parse_args(argv)

    # --smoke changes the defaults, not what was given explicitly.
    smoke = {
        "rounds": 1,
        "duration": 2,
        "scenarios": "noop,unique,sleep",
        "contenders": "checkgate,floor",
        "sleep_clients": "8",
        "sleep_ms": 100,
        "noop_clients": 4,
    }
    full = {
        "rounds": 3,
        "duration": 15,
        "scenarios": ",".join(scenarios.KINDS),
        "contenders": ",".join(CONTENDERS),
        "sleep_clients": ",".join(map(str, scenarios.SLEEP_CLIENTS)),
        "sleep_ms": scenarios.SLEEP_MS,
        "noop_clients": scenarios.NOOP_CLIENTS,
    }
    for key, value in (smoke if args.smoke else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.scenarios = _names(args.scenarios, scenarios.KINDS, parser)
    args.contenders = _names(args.contenders, tuple(CONTENDERS), parser)
    args.sleep_clients = [int(c) for c in args.sleep_clients.split(",") if c.strip()]
    Floor.procs = args.floor_procs
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
    """CPU seconds of named process groups between two samples, as cores used."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.at = 0.0

    def sample(self, groups: dict[str, list[int]]) -> dict[str, float]:
        return {name: sum(group_cpu_seconds(g) for g in pgids) for name, pgids in groups.items()}

    def start(self, groups: dict[str, list[int]]) -> None:
        self.first, self.at = self.sample(groups), time.time()

    def cores(self, groups: dict[str, list[int]]) -> dict[str, float]:
        last, elapsed = self.sample(groups), max(1e-6, time.time() - self.at)
        return {name: round((last[name] - self.first.get(name, 0.0)) / elapsed, 2) for name in last}


def run_cell(stack: BenchStack, contender: Contender, scenario: scenarios.Scenario, cell: int, args: Any) -> dict:
    """Run one scenario against one contender; the measured stats per stream and the CPU used."""
    wrk_runs: list[WrkRun] = []
    floor_run: FloorRun | None = None
    meter = CpuMeter()
    readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="self-time")
    try:
        contender.start(cell)
        contender.warm(scenario.streams)
        if isinstance(contender, Floor):
            floor_run = contender.launch(scenario.streams, scenario.window)
        # The contender's own histogram, read when the window opens and when it closes: like the rate,
        # it leaves out the ramp-up. Read from a thread: a contender saturated by a thousand clients may
        # take seconds to answer, and the schedule of the cell must not wait for it.
        own: dict[str, Future[dict[str, list[tuple[float, int]]] | None]] = {}
        t0 = time.time() + 0.2
        window_of = {s.name: math.ceil(t0 + s.window_at) for s in scenario.streams}
        window_start = window_of[scenario.primary]

        def groups() -> dict[str, list[int]]:
            mine = floor_run.pgids if floor_run else [contender.pgid()]
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
        events.append((window_start + scenario.window, lambda: cpu.update(meter.cores(groups()))))
        events.append((window_start + scenario.window, lambda: own.update(after=readers.submit(contender.self_time))))
        for when, action in sorted(events, key=lambda e: e[0]):
            wait_until(when)
            action()
        stats: dict[str, dict[str, Any]] = {}
        if floor_run is not None:
            stats = floor_run.result(timeout=60)
        for run in wrk_runs:
            stats[run.name] = run.result(timeout=args.request_timeout + 30).to_dict()
        stack.check_alive()
        cell = {"ok": True, "streams": stats, "cpu_cores": cpu}
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
    run = floor.launch(streams, window=2)
    try:
        run.go(time.time() + 0.2)
        run.result(timeout=60)
    finally:
        run.kill()
        stack.settle(0.5)


def progress_line(cell: dict, scenario: scenarios.Scenario) -> str:
    """One line per cell: the rate and latency that matter for the scenario, and the CPU used."""
    head = f"[round {cell['round']}] {scenario.name:<10} {cell['contender']:<10}"
    if not cell["ok"]:
        return f"{head} FAILED: {cell['error'][:300]}"
    primary = Stats(**cell["streams"][scenario.primary])
    latency = Stats(**cell["streams"][scenario.headline_latency])
    errors = sum(s["errors"] for s in cell["streams"].values())
    cpu = " ".join(f"{k.replace('workers_', 'w:')} {v:.2f}" for k, v in cell["cpu_cores"].items())
    if scenario.kind == "mixed":
        alone = Stats(**cell["streams"]["add_alone"])
        what = f"flood {primary.rps:8.1f} req/s  add p99 alone {_ms(alone.p99_ms)} → flooded {_ms(latency.p99_ms)} ms"
    else:
        what = f"{primary.rps:8.1f} req/s  p50 {_ms(latency.p50_ms)} ms  p99 {_ms(latency.p99_ms)} ms"
    return f"{head} {what}  errors {errors}  cores: {cpu}  ({cell['elapsed_s']:.0f} s)"


def _ms(value: float | None) -> str:
    return "   -  " if value is None else f"{value:6.1f}"


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
    sleep_slots = max(scenarios.sleep_slots_needed(scen), 200)
    max_clients = max(sum(s.clients for s in sc.streams) for sc in scen)
    raise_fd_limit(4 * max_clients + 1024)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + ("-smoke" if args.smoke else "")
    args.out.mkdir(parents=True, exist_ok=True)
    stack = BenchStack(args.out / f"{stamp}-logs", args.broker, args.backend)
    estimate = args.rounds * sum(len(args.contenders) * (sc.end + CELL_OVERHEAD_S) for sc in scen)
    print(
        f"bench {stamp}: {len(scen)} scenarios × {len(args.contenders)} contenders × {args.rounds} rounds, "
        f"~{estimate / 60:.0f} min; prefix {stack.prefix}, logs in {stack.logdir}",
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
    workers: dict[str, str] = {}
    interrupted = False
    try:
        workers = stack.start_workers(sleep_slots, args.sleep_procs)
        warm_workers(stack, sleep_slots)
        print(f"workers up and warm: {workers}", flush=True)
        cell_no = 0
        for round_no in range(1, args.rounds + 1):
            for scenario in scen:
                # Rotate the order every round so no contender always runs first (or right after the floods).
                shift = (round_no - 1) % len(args.contenders)
                order = args.contenders[shift:] + args.contenders[:shift]
                for name in order:
                    cell_no += 1
                    begun = time.monotonic()
                    record: dict[str, Any] = {"round": round_no, "scenario": scenario.name, "contender": name}
                    # A second try: on a shared machine a cell can fail for reasons of its own (a
                    # process killed from outside); a peer that is really broken fails twice.
                    for attempt in (1, 2):
                        try:
                            record.update(run_cell(stack, CONTENDERS[name](stack), scenario, cell_no, args))
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
        scen,
        args.contenders,
        sleep_slots,
        meta={
            "started_utc": started.isoformat(timespec="seconds"),
            "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
            "command": [Path(sys.executable).name, "-m", "bench", *(sys.argv[1:] if argv is None else argv)],
            "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": machine,
            "workers": workers,
            "queue_prefix": stack.prefix,
            "interrupted": interrupted,
        },
    )
    paths = report.write(
        result, args.out, stamp, latest="latest-smoke" if args.smoke else "latest", plots=not args.no_plots
    )
    print(report.markdown(result), flush=True)
    print("written: " + ", ".join(str(p) for p in paths), flush=True)
    failed = [c for c in cells if not c["ok"]]
    return 1 if interrupted or failed or not cells else 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
