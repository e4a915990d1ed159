"""The e2e tier: one Chef HA lab (real PostgreSQL, etcd, minions, master) per test session."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from saline.lab.chefha.cluster import ChefLab


@pytest.fixture(scope="session")
def chef(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChefLab]:
    lab = ChefLab(Path(tmp_path_factory.mktemp("chefha")))
    try:
        lab.up(timeout=90)
        yield lab
    finally:
        lab.down()
