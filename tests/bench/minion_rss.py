"""Idle footprint of one real ``saline minion``: RSS (also PSS/USS), threads, children.

    python tests/bench/minion_rss.py [--idle 3] --json OUT.json

Starts a lab with one minion, then replaces the lab's minion (forked from the lab's
launcher, so it shares pages it never touched and reads low) with a standalone
``saline-minion -c ...`` process, as a service manager starts it on a node; waits
``--idle`` seconds after it is online and reads ``/proc``. Target: RSS under 40 MB.
"""

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from saline.lab.lab import Lab
from saline.lab.processes import spawn, stop

TARGET_MB = 40.0


def status_fields(pid: int) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return fields


def kb_to_mb(value: str) -> float:
    return int(value.split()[0]) / 1024


def rollup_mb(pid: int) -> tuple[float, float]:
    """(PSS, USS) in MB from smaps_rollup: what the process really costs when it shares
    pages (a forked minion shares its parent's imported code until it writes to it)."""
    kb: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        kb[key] = int(value.split()[0])
    return kb["Pss"] / 1024, (kb["Private_Clean"] + kb["Private_Dirty"]) / 1024


def children(pid: int) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append({"pid": int(proc.name), "cmdline": cmd})
    return found


def standalone(lab: Lab) -> int:
    """Stop the lab's forked be1 and start it again as its own process; returns the pid."""
    info = lab.state["minions"]["be1"]
    stop({int(info["pid"]): info["marker"]})
    argv = [str(Path(sys.executable).parent / "saline-minion"), "-c", info["config"]]
    info["pid"] = spawn(argv, lab.directory / "logs" / "be1.out")
    lab.save()
    lab.wait_online(["be1"], 30)
    return int(info["pid"])


def measure(lab: Lab, idle: float) -> dict[str, Any]:
    up_s = lab.up(1)
    time.sleep(idle)
    forked = kb_to_mb(status_fields(int(lab.state["minions"]["be1"]["pid"]))["VmRSS"])
    pid = standalone(lab)
    time.sleep(idle)  # a benchmark: let start-up garbage settle, as a long-idle minion would
    master_pid = int(lab.state["master"]["pid"])
    fields = status_fields(pid)
    pss, uss = rollup_mb(pid)
    tasks = Path(f"/proc/{pid}/task")
    return {
        "lab_up_s": up_s,
        "idle_s": idle,
        "minion_pid": pid,
        "minion_cmdline": Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(),
        "minion_rss_mb": kb_to_mb(fields["VmRSS"]),
        "lab_forked_minion_rss_mb": forked,
        "minion_rss_peak_mb": kb_to_mb(fields["VmHWM"]),
        "minion_pss_mb": pss,
        "minion_uss_mb": uss,
        "minion_threads": int(fields["Threads"]),
        "minion_thread_names": sorted((t / "comm").read_text().strip() for t in tasks.iterdir()),
        "minion_children": children(pid),
        "minion_open_fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
        "master_rss_mb": kb_to_mb(status_fields(master_pid)["VmRSS"]),
        "target_mb": TARGET_MB,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--idle", type=float, default=3.0, help="seconds idle after online")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the finally blocks stop what was started
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = Path(tempfile.mkdtemp(prefix="slr-"))
    lab = Lab(tmp / "lab")
    try:
        out = measure(lab, a.idle)
    finally:
        try:
            lab.down()
        except Exception as e:  # nothing was started, or up failed before recording it
            print(f"lab down: {e}", file=sys.stderr)
        shutil.rmtree(tmp, ignore_errors=True)
    out["within_target"] = out["minion_rss_mb"] < TARGET_MB
    for key, value in out.items():
        print(f"{key:22} {value:.2f}" if isinstance(value, float) else f"{key:22} {value}")
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
