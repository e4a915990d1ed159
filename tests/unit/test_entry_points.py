"""Every entry point imports cleanly in a fresh interpreter (catches import cycles that a
test process, with modules already loaded in another order, would hide)."""

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "code",
    [
        "import minion.config",
        "import minion.beacons.config",
        "import minion.daemon",
        "import master.daemon",
        "import saline.cli.main",
        "from minion.__main__ import main; main(['--help'])",
    ],
)
def test_fresh_import(code: str) -> None:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_saline_minion_help() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "minion", "--help"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and "saline-minion" in proc.stdout, proc.stderr
