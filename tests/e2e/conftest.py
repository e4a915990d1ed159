"""The e2e tier: one Chef HA lab (real PostgreSQL, etcd, minions, master) per test session."""

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.chefha.cluster import ChefLab


@pytest.fixture(scope="session")
def chef() -> Iterator[ChefLab]:
    # not under pytest's tmp dirs: they are 0700 and PostgreSQL runs as the postgres user
    directory = Path(tempfile.mkdtemp(prefix="saline-chefha-"))
    lab = ChefLab(directory)
    try:
        lab.up(timeout=90)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(directory, ignore_errors=True)
