"""Start, find and stop the lab's background processes, by pid, verified by command line."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


def spawn(argv: list[str], log_path: Path, env: dict[str, str] | None = None) -> int:
    """Start ``argv`` detached (own session), output appended to ``log_path``; return its pid."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
        )
    return proc.pid


def saline_argv(config: Path, command: str) -> list[str]:
    return [sys.executable, "-m", "saline.cli.main", "-c", str(config), command]


def cmdline(pid: int) -> str:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return ""
    # a process title (``saline-minion be1 -c ...``) is padded with NULs to its old length
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int, marker: str) -> bool:
    """Is ``pid`` running and still the process we started (its command line has ``marker``)?"""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    # a second look: a daemon setting its process title rewrites its command line in place,
    # and a read during the rewrite may find neither the old text nor the new
    return state != "Z" and (marker in cmdline(pid) or marker in cmdline(pid))


def reap() -> None:
    """Collect exited children of this process (the lab CLI may be their parent)."""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass


def stop(pids: dict[int, str], timeout: float = 10.0, sig: int = signal.SIGTERM) -> list[int]:
    """Send ``sig`` to each pid whose command line still has its marker; SIGKILL after
    ``timeout``.

    :returns: the pids that were running and have been stopped.
    """
    running = [pid for pid, marker in pids.items() if alive(pid, marker)]
    for pid in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reap()
        if not any(alive(pid, pids[pid]) for pid in running):
            return running
        time.sleep(0.05)
    for pid in running:
        if alive(pid, pids[pid]):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    reap()
    return running
