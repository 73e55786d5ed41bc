"""Run one of the JMeter plans in bench/jmeter/ against a gateway and summarise the results.

    python -m bench.jmeter_run --plan sleep --threads 60 --duration 10 --port 8888 [--host H] [--out DIR] [--json]

`--plan` is `sleep` (GET /check/sleep?ms=200..400, the original article's scenario), `add` (the no-op check) or
the path of any .jmx. Needs `jmeter` and, for the agent, a JDK's `javac`
(Debian: `apt-get install jmeter openjdk-17-jdk-headless`). Debian's JMeter 2.13 cannot load any plan as shipped
(its XStream 1.4.20 forbids JMeter's own classes); bench/jmeter/XStreamFix.java, a Java agent compiled here on first
use and cached under DIR/agent/, fixes that (`--no-agent` skips it, e.g. for JMeter 5.x). Each run writes a fresh
DIR/<plan>-<time>-<random>/ with results.jtl (CSV), jmeter.log and summary.json; DIR defaults to var/jmeter/.
JMeter's console output goes to stderr; the summary (or its JSON with `--json`) goes to stdout.
Latencies are JMeter's `elapsed` (full response time), in ms; percentiles use the nearest-rank method;
qps = samples / (last sample end - first sample start). Exit status: 1 when JMeter failed or recorded no sample,
2 when the error rate is above --max-error-pct (default 0), else 0.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PLANS_DIR = REPO / "bench" / "jmeter"
AGENT_SOURCE = PLANS_DIR / "XStreamFix.java"
AGENT_MANIFEST = PLANS_DIR / "MANIFEST.MF"
DEFAULT_OUT = REPO / "var" / "jmeter"
INSTALL_HINT = "install with: apt-get install jmeter openjdk-17-jdk-headless (javac; default-jdk-headless pulls it in)"
# Result-file settings forced on every run, so the JTL has the shape read_jtl expects whatever the local config.
SAVE_PROPS = {
    "jmeter.save.saveservice.output_format": "csv",
    "jmeter.save.saveservice.print_field_names": "true",
    "jmeter.save.saveservice.timestamp_format": "ms",
    "jmeter.save.saveservice.assertion_results_failure_message": "true",
    "sampleresult.timestamp.start": "true",
    "summariser.interval": "10",
}


def find_tools(need_javac: bool) -> tuple[str, str | None]:
    """Return the paths of `jmeter` and (when needed) `javac`; exit with an install hint if one is missing."""
    jmeter = shutil.which("jmeter")
    javac = shutil.which("javac") if need_javac else None
    missing = [name for name, absent in (("jmeter", jmeter is None), ("javac", need_javac and javac is None)) if absent]
    if jmeter is None or missing:
        sys.exit(f"jmeter_run: {' and '.join(missing)} not found on PATH; {INSTALL_HINT}")
    return jmeter, javac


def build_agent(javac: str, cache_dir: Path) -> Path:
    """Compile XStreamFix.java into an agent jar under cache_dir, reused while source and manifest are unchanged."""
    manifest = AGENT_MANIFEST.read_text()
    digest = hashlib.sha256(AGENT_SOURCE.read_bytes() + manifest.encode()).hexdigest()[:12]
    jar = cache_dir / f"xstream-fix-{digest}.jar"
    if jar.exists():
        return jar
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        cmd = [javac, "--release", "8", "-Xlint:-options", "-d", tmp, str(AGENT_SOURCE)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"jmeter_run: compiling {AGENT_SOURCE} failed:\n{done.stderr}")
        partial = Path(tmp) / jar.name
        with zipfile.ZipFile(partial, "w") as archive:
            archive.writestr("META-INF/MANIFEST.MF", f"Manifest-Version: 1.0\n{manifest.rstrip()}\n\n")
            for compiled in sorted(Path(tmp).glob("*.class")):
                archive.write(compiled, compiled.name)
        partial.replace(jar)
    return jar


def resolve_plan(plan: str) -> Path:
    """Map `sleep`/`add` to bench/jmeter/<name>.jmx; anything else is taken as a path to a .jmx."""
    path = PLANS_DIR / f"{plan}.jmx" if "/" not in plan and not plan.endswith(".jmx") else Path(plan)
    if not path.is_file():
        sys.exit(f"jmeter_run: no such plan: {path}")
    return path.resolve()


def new_run_dir(out: Path, plan: Path) -> Path:
    """Create a fresh, uniquely named directory for one run (JMeter appends to an existing JTL)."""
    out.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{plan.stem}-{time.strftime('%Y%m%d-%H%M%S')}-", dir=out))


def jmeter_command(jmeter: str, plan: Path, run_dir: Path, props: dict[str, str]) -> list[str]:
    """Build the non-GUI JMeter command line writing results.jtl and jmeter.log into run_dir."""
    cmd = [jmeter, "-n", "-t", str(plan), "-l", str(run_dir / "results.jtl"), "-j", str(run_dir / "jmeter.log")]
    return cmd + [f"-J{name}={value}" for name, value in {**SAVE_PROPS, **props}.items()]


def run_jmeter(cmd: list[str], agent: Path | None) -> int:
    """Run JMeter with the agent in JAVA_ARGS (read by Debian's wrapper), its console output sent to stderr."""
    env = dict(os.environ)
    if agent is not None:
        env["JAVA_ARGS"] = f"{env.get('JAVA_ARGS', '')} -javaagent:{agent}".strip()
    return subprocess.run(cmd, env=env, stdout=sys.stderr, check=False).returncode


def read_jtl(path: Path) -> list[dict[str, str]]:
    """Read a CSV JTL written with print_field_names=true (csv module: messages may hold newlines)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def percentile(ordered: list[int], q: float) -> int:
    """Nearest-rank percentile (q in 0..100) of an ascending, non-empty list."""
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def error_reason(row: dict[str, str]) -> str:
    """One line naming why a sample failed: its response code and message, or the assertion's first line."""
    code, message = row.get("responseCode", ""), row.get("responseMessage", "")
    assertion = (row.get("failureMessage") or "").strip().splitlines()
    detail = assertion[0] if code == "200" and assertion else message
    return " ".join(f"{code} {detail}".split()) or "unknown"


def error_reasons(rows: list[dict[str, str]]) -> dict[str, int]:
    """Count failed samples by reason, most frequent first."""
    counts = Counter(error_reason(row) for row in rows if row.get("success") != "true")
    return dict(counts.most_common())


def summarize(rows: list[dict[str, str]]) -> dict[str, Any]:
    """Aggregate JTL rows: samples, errors, qps over the sampled window, latency statistics in ms."""
    if not rows:
        return {"samples": 0, "errors": 0, "error_pct": 0.0}
    elapsed = sorted(int(row["elapsed"]) for row in rows)
    first = min(int(row["timeStamp"]) for row in rows)
    last = max(int(row["timeStamp"]) + int(row["elapsed"]) for row in rows)
    window = max(last - first, 1) / 1000
    errors = sum(row.get("success") != "true" for row in rows)
    return {
        "samples": len(rows),
        "errors": errors,
        "error_pct": round(100 * errors / len(rows), 2),
        "window_s": round(window, 3),
        "qps": round(len(rows) / window, 2),
        "per_minute": round(60 * len(rows) / window, 1),
        "mean_ms": round(sum(elapsed) / len(elapsed), 1),
        "min_ms": elapsed[0],
        "p50_ms": percentile(elapsed, 50),
        "p90_ms": percentile(elapsed, 90),
        "p99_ms": percentile(elapsed, 99),
        "max_ms": elapsed[-1],
        "error_reasons": error_reasons(rows),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """Render a summary as the few lines a JMeter user looks for."""
    s = summary
    lines = [
        f"plan {s['plan']}  target {s['target']}  threads {s['threads']}  duration {s['duration_s']} s",
        f"samples {s['samples']}  errors {s['errors']} ({s['error_pct']:.2f}%)",
    ]
    if s["samples"]:
        lines += [
            f"qps {s['qps']:.2f}/s  throughput {s['per_minute']:.1f}/min  over {s['window_s']:.3f} s",
            f"latency ms  mean {s['mean_ms']:.1f}  min {s['min_ms']}  p50 {s['p50_ms']}  p90 {s['p90_ms']}"
            f"  p99 {s['p99_ms']}  max {s['max_ms']}",
        ]
    lines += [f"  error {count:>6}  {reason}" for reason, count in s.get("error_reasons", {}).items()]
    return "\n".join([*lines, f"results {s['results']}"])


def jmeter_property(text: str) -> tuple[str, str]:
    """Parse a NAME=VALUE command-line item into a JMeter property."""
    name, sep, value = text.partition("=")
    if not name or not sep:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.jmeter_run", description=__doc__.splitlines()[0])
    parser.add_argument("--plan", default="sleep", help="sleep, add, or a path to a .jmx (default: sleep)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8888)
    parser.add_argument("--threads", type=int, default=60)
    parser.add_argument("--duration", type=int, default=30, help="seconds (default: 30)")
    parser.add_argument("--ramp", type=int, default=1, help="ramp-up seconds (default: 1)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default: {DEFAULT_OUT})")
    parser.add_argument(
        "-J",
        dest="extra",
        action="append",
        default=[],
        type=jmeter_property,
        metavar="NAME=VALUE",
        help="another JMeter property (repeatable)",
    )
    parser.add_argument("--no-agent", action="store_true", help="run without the XStream fix (JMeter 5.x)")
    parser.add_argument("--max-error-pct", type=float, default=0.0, help="exit 2 above this error %% (default: 0)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser.parse_args(argv)


def run_plan(args: argparse.Namespace) -> dict[str, Any]:
    """Run the plan once and return its summary, also written as summary.json next to the JTL."""
    jmeter, javac = find_tools(need_javac=not args.no_agent)
    plan = resolve_plan(args.plan)
    agent = None if javac is None else build_agent(javac, args.out / "agent")
    run_dir = new_run_dir(args.out, plan)
    props = {"host": args.host, "port": str(args.port), "threads": str(args.threads)}
    props |= {"duration": str(args.duration), "ramp": str(args.ramp)}
    props |= dict(args.extra)
    code = run_jmeter(jmeter_command(jmeter, plan, run_dir, props), agent)
    summary: dict[str, Any] = {"plan": plan.stem, "target": f"http://{args.host}:{args.port}"}
    summary |= {"threads": args.threads, "duration_s": args.duration, "jmeter_exit": code}
    summary |= summarize(read_jtl(run_dir / "results.jtl")) | {"results": str(run_dir / "results.jtl")}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    """Run the plan and print its summary; return the exit status described in the module docstring."""
    args = parse_args(argv)
    summary = run_plan(args)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    if summary["jmeter_exit"] != 0 or not summary["samples"]:
        return 1
    return 2 if summary["error_pct"] > args.max_error_pct else 0


if __name__ == "__main__":
    sys.exit(main())
