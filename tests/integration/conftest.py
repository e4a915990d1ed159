"""Fixtures starting a real lab: a master and minion processes over real CurveZMQ."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.lab import Lab


def _start(directory: Path, count: int) -> Lab:
    lab = Lab(directory)
    lab.up(count, timeout=60)
    return lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """A lab of 4 minions (be1, be2 backends; fe1, fe2 frontends) shared by a module."""
    the_lab = _start(tmp_path_factory.mktemp("lab"), 4)
    yield the_lab
    the_lab.down()


@pytest.fixture
def fresh_lab(tmp_path: Path) -> Iterator[Lab]:
    """A lab of 3 minions for one test that may break it (kill processes...)."""
    the_lab = _start(tmp_path / "lab", 3)
    yield the_lab
    the_lab.down()
