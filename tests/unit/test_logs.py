"""How a daemon presents itself: its log lines as text or JSON, and its process title."""

import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from saline.logs import formatter, setup_logging


@pytest.fixture
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_json_lines_carry_ts_level_logger_message_and_the_traceback(
    tmp_path: Path, restore_root_logger: None
) -> None:
    log_file = tmp_path / "logs" / "master.log"
    setup_logging("info", log_file, "saline-master", "json")
    log = logging.getLogger("master.test")
    log.debug("not at info")
    log.warning("minion %s lost\nsecond line", "be1")
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("handler failed")
    for handler in logging.getLogger().handlers:
        handler.flush()

    lines = log_file.read_text().splitlines()
    assert len(lines) == 2, lines  # the newline in the message stays inside its line
    first, second = _records(log_file)
    assert first["level"] == "warning"
    assert first["logger"] == "master.test"
    assert first["message"] == "minion be1 lost\nsecond line"
    assert first["process"] == "saline-master"
    assert "exc_info" not in first
    ts = datetime.fromisoformat(str(first["ts"]))
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0  # type: ignore[union-attr]
    assert second["level"] == "error"
    assert "RuntimeError: boom" in str(second["exc_info"])
    assert str(second["exc_info"]).startswith("Traceback")


def test_text_lines_keep_their_shape(tmp_path: Path, restore_root_logger: None) -> None:
    log_file = tmp_path / "minion.log"
    setup_logging("debug", log_file, "saline-minion", "text")
    logging.getLogger("minion.test").debug("hello %d", 42)
    for handler in logging.getLogger().handlers:
        handler.flush()
    [line] = log_file.read_text().splitlines()
    assert "saline-minion[" in line and " DEBUG minion.test: hello 42" in line


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        formatter("xml", "saline-master")


def test_the_process_title_names_the_daemon_in_ps(tmp_path: Path) -> None:
    # in a child: the test runner keeps its own title
    code = (
        "import sys; from saline.logs import set_process_title;"
        "set_process_title('saline-minion', 'be1', '-c', sys.argv[1]);"
        "print('titled', flush=True); sys.stdin.read()"
    )
    config = str(tmp_path / "minion.yaml")
    child = subprocess.Popen(
        [sys.executable, "-c", code, config],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "titled\n"
        cmdline = Path(f"/proc/{child.pid}/cmdline").read_bytes().rstrip(b"\0")
        assert cmdline.decode() == f"saline-minion be1 -c {config}"
        assert Path(f"/proc/{child.pid}/comm").read_text() == "saline-minion\n"
        ps = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-p", str(child.pid)], capture_output=True, text=True
        )
        assert ps.stdout.strip() == f"saline-minion be1 -c {config}"
    finally:
        child.communicate("")
    assert child.returncode == 0
