"""Pillar on the master: the compiler lives in the kernel (``saline.pillar``), shared with
``saline call --local``, which compiles a node's pillar without a master.

The master calls it only for the id a minion authenticated as, with the grains it trusts
for that id (``master.trust``): see ``master.handlers.MinionHandlers.on_pillar_request``.
"""

from saline.pillar import PillarCompiler, PillarError, deep_merge

__all__ = ["PillarCompiler", "PillarError", "deep_merge"]
