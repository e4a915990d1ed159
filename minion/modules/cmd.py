"""cmd.*: run commands. Never through a shell unless the caller explicitly asks for one."""

import contextlib
import math
import os
import shlex
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from minion.modules.base import Context, Outcome
from saline.errors import ExecutionError
from saline.shellwords import refusal

_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0", ""})


def parse_bool(value: Any, name: str) -> bool:
    """Coerce a boolean argument that may arrive as a CLI string ("true", "False"...).

    Anything unrecognised is an error rather than truthy: ``shell="false"`` must not mean True.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
    raise ExecutionError(f"{name} must be a boolean (true/false), got {value!r}")


def _parse_timeout(timeout: Any) -> float | None:
    if timeout is None:
        return None
    try:
        seconds = float(timeout)
    except (TypeError, ValueError) as exc:
        raise ExecutionError(f"timeout must be a number of seconds, got {timeout!r}") from exc
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ExecutionError(f"timeout must be > 0, got {timeout!r}")
    return seconds


def _build_argv(cmd: Any, shell: bool) -> list[str]:
    if shell:
        if isinstance(cmd, str):
            script = cmd
        elif isinstance(cmd, Sequence):
            script = shlex.join(str(arg) for arg in cmd)
        else:
            raise ExecutionError(f"cmd must be a string or a list, got {type(cmd).__name__}")
        return ["/bin/sh", "-c", script]
    if isinstance(cmd, str):
        try:
            argv = shlex.split(cmd)
        except ValueError as exc:
            raise ExecutionError(f"cannot split command {cmd!r}: {exc}") from exc
    elif isinstance(cmd, Sequence):
        argv = [str(arg) for arg in cmd]
    else:
        raise ExecutionError(f"cmd must be a string or a list, got {type(cmd).__name__}")
    if not argv:
        raise ExecutionError("empty command")
    return argv


def _build_env(env: Any) -> dict[str, str] | None:
    if env is None:
        return None
    if not isinstance(env, Mapping):
        raise ExecutionError(f"env must be a mapping, got {type(env).__name__}")
    return {**os.environ, **{str(k): str(v) for k, v in env.items()}}


def _kill_group(proc: "subprocess.Popen[bytes]") -> None:
    # The command runs in its own session, so its pgid is its pid: this reaches every
    # grandchild that did not detach itself, not just the direct child.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # Don't read the pipes: a grandchild that escaped the group could hold them open forever.
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


def run(
    ctx: Context,
    cmd: str | list[str],
    shell: bool | str = False,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    stdin: str | bytes | None = None,
    python_shell: bool | str | None = None,
) -> Outcome:
    """Run a command and return its stdout, stderr and retcode (the job fails unless 0).

    Args:
        cmd: argv list, or a string split like a shell would (no shell is involved); a
            string with shell syntax outside quotes (``|``, ``>``, ``&&``, ``$(``, globs...)
            is refused unless shell is true: nothing guesses what it meant.
        shell: true to run the string with /bin/sh -c (pipes, $VARS, ;). Off by default.
        python_shell: SaltStack's name for shell (either may be given).
        cwd: working directory.
        env: variables merged over the minion's environment.
        timeout: seconds; on expiry the whole process group is killed and the job fails.
        stdin: text fed to the command's standard input (default: empty).
    """
    use_shell = parse_bool(shell, "shell") or (
        python_shell is not None and parse_bool(python_shell, "python_shell")
    )
    if isinstance(cmd, str) and not use_shell:
        problem = refusal(cmd, "cmd.run")
        if problem is not None:
            raise ExecutionError(problem)
    argv = _build_argv(cmd, use_shell)
    seconds = _parse_timeout(timeout)
    full_env = _build_env(env)
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        # Only reached with shell=True on explicit request; otherwise argv is exec'd directly.
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if data is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        if cwd is not None and exc.filename == cwd:
            raise ExecutionError(f"no such directory: {cwd}") from exc
        raise ExecutionError(f"command not found: {argv[0]}") from exc
    except PermissionError as exc:
        raise ExecutionError(f"permission denied: {exc.filename or argv[0]}") from exc
    except OSError as exc:
        raise ExecutionError(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = proc.communicate(data, timeout=seconds)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc)
        raise ExecutionError(f"command timed out after {seconds:g}s") from exc
    except BaseException:
        _kill_group(proc)
        raise
    result = {
        "stdout": out.decode("utf-8", errors="replace"),
        "stderr": err.decode("utf-8", errors="replace"),
        "retcode": proc.returncode,
    }
    return Outcome(result, proc.returncode)


FUNCTIONS: dict[str, Callable[..., Any]] = {"run": run}
