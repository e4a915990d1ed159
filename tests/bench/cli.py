"""CLI latency: ``saline --help`` start-up, lab start-up, and ``saline run '*' test.ping``.

    python tests/bench/cli.py [--runs 10] [--sizes 10 30] --json OUT.json

Targets: ``--help`` under 0.3 s (p50); 30 fresh minions all answering within 3 s of
``lab up``; ``run '*' test.ping --out json`` on 30 minions under 0.8 s (p50).
"""

import argparse
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from saline.lab.lab import Lab

SALINE = str(Path(sys.executable).parent / "saline")  # the venv's console script


def timed(argv: list[str]) -> tuple[float, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    return time.perf_counter() - started, proc


def summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "p50_s": statistics.median(ordered),
        "p90_s": ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))],
        "min_s": ordered[0],
        "max_s": ordered[-1],
    }


def bench_help(runs: int) -> dict[str, Any]:
    times: list[float] = []
    for _ in range(runs):
        elapsed, proc = timed([SALINE, "--help"])
        if proc.returncode != 0:
            raise RuntimeError(f"saline --help failed: {proc.stderr}")
        times.append(elapsed)
    return summary(times)


def bench_lab(directory: Path, count: int, runs: int) -> dict[str, Any]:
    lab = Lab(directory)
    try:
        up_s = lab.up(count)
        argv = [SALINE, "-c", str(lab.master_config), "run", "*", "test.ping", "--out", "json"]
        times: list[float] = []
        returned: list[int] = []
        for _ in range(runs):
            elapsed, proc = timed(argv)
            times.append(elapsed)
            try:
                document = json.loads(proc.stdout)
                returned.append(sum(1 for r in document["returns"].values() if r["success"]))
            except (ValueError, KeyError):
                returned.append(0)
            if proc.returncode != 0:
                print(f"  run exited {proc.returncode}: {proc.stderr.strip()}", file=sys.stderr)
        # the same job through the client API in-process: what the CLI adds is the rest
        api_times: list[float] = []
        for _ in range(runs):
            started = time.perf_counter()
            with lab.client(timeout=60) as master:
                for _message in master.stream("run", target="*", fun="test.ping"):
                    pass
            api_times.append(time.perf_counter() - started)
    finally:
        try:
            lab.down()
        except Exception as e:  # up failed before anything was recorded
            print(f"lab down: {e}", file=sys.stderr)
    return {
        "minions": count,
        "lab_up_s": up_s,
        "run": summary(times),
        "api_run": summary(api_times),
        "returned_per_run": returned,
        "all_returned": all(n == count for n in returned),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--sizes", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop what was started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    out: dict[str, Any] = {"help": bench_help(a.runs), "labs": {}}
    print(f"saline --help: p50 {out['help']['p50_s']:.3f}s (target < 0.3 s)")
    tmp = Path(tempfile.mkdtemp(prefix="slc-"))
    try:
        for count in a.sizes:
            result = bench_lab(tmp / f"lab{count}", count, a.runs)
            out["labs"][str(count)] = result
            print(
                f"{count} minions: lab up (all online) {result['lab_up_s']:.2f}s; "
                f"saline run '*' test.ping --out json p50 {result['run']['p50_s']:.3f}s "
                f"(p90 {result['run']['p90_s']:.3f}s); all returned: {result['all_returned']}; "
                f"same job via the client API in-process p50 {result['api_run']['p50_s']:.3f}s"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
