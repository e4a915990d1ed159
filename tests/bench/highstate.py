"""No-op highstate of 50 ``file.managed`` states on one real minion, repeated.

    python tests/bench/highstate.py [--states 50] [--runs 20] --json OUT.json

Lays out a lab with one minion, a top file and one state file of N ``file.managed``
states (contents from a Jinja template with grains and pillar), applies it once so every
file exists, then runs the highstate R more times; nothing changes in those runs. Reports
p50/p99 of the time the minion spent (its job's wall time: fork, pillar and file fetches
from the master, render, validate, order, check every file) and of the whole round trip
from the client. Target: under 150 ms on the minion at p50.
"""

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from saline.lab.lab import Lab

TARGET_MS = 150.0


def layout(lab_dir: Path, node: Path, count: int) -> None:
    states = lab_dir / "states"
    states.mkdir(parents=True, exist_ok=True)
    (states / "top.yaml").write_text("'*': [bench]\n")
    (states / "bench.j2").write_text("role={{ grains.role }} port={{ pillar.port }} i={{ i }}\n")
    lines = []
    for i in range(count):
        lines += [
            f"{node}/file{i:03d}.conf:",
            "  file.managed:",
            "    - source: saline://bench.j2",
            "    - template: jinja",
            '    - mode: "0644"',
            f"    - context: {{i: {i}}}",
        ]
    (states / "bench.yaml").write_text("\n".join(lines) + "\n")
    pillar = lab_dir / "pillar"
    pillar.mkdir(parents=True, exist_ok=True)
    (pillar / "top.yaml").write_text("'*': [bench]\n")
    (pillar / "bench.yaml").write_text("port: 8080\n")


def highstate(lab: Lab) -> tuple[float, float, list[dict[str, Any]]]:
    """(minion ms, round trip ms, state results) of one highstate."""
    started = time.perf_counter()
    with lab.client(timeout=120) as master:
        messages = list(
            master.stream("run", target="be1", fun="state.apply", args=[], kwargs={}, timeout=120)
        )
    wall = (time.perf_counter() - started) * 1000
    [ret] = [m for m in messages if m["type"] == "ret"]
    if not ret["success"]:
        raise SystemExit(f"highstate failed: {ret['return']}")
    return float(ret["duration_ms"]), wall, ret["return"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--states", type=int, default=50)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="slh-"))
    node = tmp / "node"
    node.mkdir()
    lab = Lab(tmp / "lab")
    layout(lab.directory, node, a.states)
    try:
        lab.up(1)
        first_ms, _, results = highstate(lab)  # creates the files (and warms the minion)
        changed = sum(1 for r in results if r["changes"])
        minion_ms, wall_ms, changes = [], [], 0
        for _ in range(a.runs):
            m, w, results = highstate(lab)
            minion_ms.append(m)
            wall_ms.append(w)
            changes += sum(1 for r in results if r["changes"])
    finally:
        lab.down()
        shutil.rmtree(tmp, ignore_errors=True)
    out = {
        "states": a.states,
        "runs": a.runs,
        "first_run_ms": first_ms,
        "first_run_changed": changed,
        "noop_changes": changes,
        "minion_p50_ms": statistics.median(minion_ms),
        "minion_p99_ms": pct(minion_ms, 99),
        "roundtrip_p50_ms": statistics.median(wall_ms),
        "roundtrip_p99_ms": pct(wall_ms, 99),
        "target_ms": TARGET_MS,
    }
    out["within_target"] = out["minion_p50_ms"] < TARGET_MS and changes == 0
    for key, value in out.items():
        print(f"{key:20} {value:.1f}" if isinstance(value, float) else f"{key:20} {value}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
