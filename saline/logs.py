"""How a daemon presents itself: its log lines (text or JSON, one line per record, to a file
or stderr) and its process title (what ``ps`` shows)."""

import json
import logging
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

#: ``--log-format`` choices
LOG_FORMATS = ("text", "json")
#: ``--log-level`` choices, as the configs spell them
LOG_LEVELS = ("debug", "info", "warning", "error")


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ``ts`` (RFC 3339, UTC, milliseconds),
    ``level``, ``logger``, ``message``, ``process``, ``pid``, and ``exc_info`` (the formatted
    traceback) or ``stack_info`` when the record has one.

    The message is the record's own text: what a log line masks, this masks too.
    """

    def __init__(self, process: str) -> None:
        super().__init__()
        self.process = process

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "process": self.process,
            "pid": record.process,
        }
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc_info"] = record.exc_text
        if record.stack_info:
            line["stack_info"] = self.formatStack(record.stack_info)
        # ASCII only, newlines escaped: one line per record whatever the message holds
        return json.dumps(line, default=str)


def formatter(fmt: str, name: str) -> logging.Formatter:
    """The formatter of ``--log-format`` ``fmt`` for the daemon ``name`` (saline-master...)."""
    if fmt == "json":
        return JsonFormatter(name)
    if fmt == "text":
        return logging.Formatter(
            f"%(asctime)s {name}[%(process)d] %(levelname)s %(name)s: %(message)s"
        )
    raise ValueError(f"unknown log format {fmt!r} (expected one of {', '.join(LOG_FORMATS)})")


def setup_logging(level: str, log_file: Path | None, name: str, fmt: str = "text") -> None:
    handler: logging.Handler
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt, name))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def set_process_title(name: str, *details: str) -> None:
    """Show ``name details...`` in ``ps`` (``/proc/PID/cmdline``): lab minions are told apart
    by their ids (``saline-minion be1 -c /lab/minions/be1/minion.yaml``). The short name
    (``/proc/PID/comm``: ``ps -o comm``, ``top``, ``pgrep -x``) becomes ``name`` alone.

    Keep the config path among ``details``: the lab (and an operator) recognises a daemon by
    it on the command line.
    """
    import setproctitle  # a small C extension; imported only by the daemons that use it

    setproctitle.setproctitle(" ".join((name, *details)))
    # setproctitle also sets comm to the title's first 15 bytes ("saline-minion b"): the
    # program name reads better there
    setproctitle.setthreadtitle(name)
