"""The e2e tier: one Chef HA lab (real PostgreSQL, etcd, minions, master) per test session."""

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from saline.lab.chefha.cluster import ChefLab


@contextlib.contextmanager
def chef_lab(prefix: str, **options: Any) -> Iterator[ChefLab]:
    """A Chef HA lab (``options`` as ``ChefLab``'s), up for the ``with`` block."""
    # not under pytest's tmp dirs: they are 0700 and PostgreSQL runs as the postgres user
    directory = Path(tempfile.mkdtemp(prefix=prefix))
    lab = ChefLab(directory, **options)
    try:
        lab.up(timeout=90)
        yield lab
    finally:
        lab.down()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def chef() -> Iterator[ChefLab]:
    with chef_lab("saline-chefha-") as lab:
        yield lab
