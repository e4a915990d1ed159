"""What the master trusts about a minion, as opposed to what the minion claims.

A minion's grains come from its own hello: they may route ad-hoc commands (``-T grain``)
and inform rules, but a compromised minion can claim any of them. Secrets (pillar) are
given only on what the master decides: the authenticated id, nodegroups in the master
config, and **trusted grains** the operator fixed on the master, in ``minion_grains:`` of
master.yaml or with ``saline key accept ID --grain k=v`` (the key ring's value wins).
"""

from collections.abc import Mapping
from typing import Any

from saline.keys import KeyRing


class TrustedGrains:
    def __init__(self, configured: Mapping[str, Mapping[str, Any]], keys: KeyRing) -> None:
        self.configured = configured
        self.keys = keys

    def of(self, minion_id: str) -> dict[str, Any]:
        """The grains the master trusts for ``minion_id``."""
        return {**self.configured.get(minion_id, {}), **self.keys.trusted_grains(minion_id)}

    @staticmethod
    def contradiction(trusted: Mapping[str, Any], claimed: Mapping[str, Any]) -> str | None:
        """Which trusted grains the minion's claim contradicts (a sentence); None if none."""
        wrong = sorted(k for k, v in trusted.items() if k in claimed and claimed[k] != v)
        if not wrong:
            return None
        return ", ".join(f"{k} claimed {claimed[k]!r}, trusted {trusted[k]!r}" for k in wrong)
