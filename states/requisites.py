"""The ordering graph: resolve requisites to chunk keys and fix a stable run order.

Chunks arrive in declaration order (included files first). Requisites only move a chunk
after what it depends on; among independent chunks declaration order is kept, so the
same tree always runs the same way. Everything here happens before anything runs: a
requisite naming no state, or a cycle, is a :class:`StateError`.
"""

import heapq
from collections.abc import Sequence

from saline.errors import StateError
from states.model import Chunk, Requisite, RequisiteKind

__all__ = ["order_chunks"]

# (dependent index, kind) -> the indexes it depends on, in declaration order, no duplicates
_Edges = dict[tuple[int, RequisiteKind], list[int]]


def order_chunks(chunks: Sequence[Chunk]) -> list[Chunk]:
    """Return ``chunks`` in run order with ``require``/``watch``/... resolved and ``order`` set.

    A requisite ``{module: target}`` matches every chunk of that module whose id or name is
    ``target``. ``<kind>_in`` on chunk A naming B is ``<kind>`` on B naming A.

    :raises StateError: a requisite matches no chunk (names its file and line), or the
        requisites form a cycle (names the chunks in it).
    """
    edges = _resolve(chunks)
    deps: list[set[int]] = [set() for _ in chunks]
    for (dependent, _kind), targets in edges.items():
        deps[dependent].update(targets)
    ordered = _stable_topological(deps, chunks)
    ordered_chunks: list[Chunk] = []
    for position, index in enumerate(ordered):
        update: dict[str, object] = {"order": position}
        for kind in RequisiteKind:
            update[kind.value] = [chunks[t].key for t in edges.get((index, kind), [])]
        ordered_chunks.append(chunks[index].model_copy(update=update))
    return ordered_chunks


def _resolve(chunks: Sequence[Chunk]) -> _Edges:
    """Turn every declared requisite into edges between chunk indexes."""
    by_ref: dict[tuple[str, str], list[int]] = {}
    for index, chunk in enumerate(chunks):
        by_ref.setdefault((chunk.module, chunk.id), []).append(index)
        if chunk.name != chunk.id:
            by_ref.setdefault((chunk.module, chunk.name), []).append(index)
    edges: _Edges = {}
    for index, chunk in enumerate(chunks):
        for req in chunk.requisites:
            targets = by_ref.get((req.module, req.target))
            if not targets:
                raise StateError(_missing_message(chunk, req))
            for target in targets:
                dependent, dependency = (target, index) if req.reverse else (index, target)
                bucket = edges.setdefault((dependent, req.kind), [])
                if dependency not in bucket:
                    bucket.append(dependency)
    return edges


def _missing_message(chunk: Chunk, req: Requisite) -> str:
    key = f"{req.kind.value}_in" if req.reverse else req.kind.value
    return (
        f"{chunk.file}:{req.line}: {chunk.id}: {chunk.state}: {key}: "
        f"no state {req.module}:{req.target} (by id or name)"
    )


def _stable_topological(deps: list[set[int]], chunks: Sequence[Chunk]) -> list[int]:
    """Kahn's algorithm; of the chunks ready to run, the first declared goes first.

    (``graphlib.TopologicalSorter`` gives no such guarantee.)
    """
    waiting = [len(d) for d in deps]
    dependents: list[list[int]] = [[] for _ in deps]
    for index, needs in enumerate(deps):
        for need in needs:
            dependents[need].append(index)
    ready = [index for index, count in enumerate(waiting) if count == 0]
    heapq.heapify(ready)
    ordered: list[int] = []
    while ready:
        index = heapq.heappop(ready)
        ordered.append(index)
        for dependent in dependents[index]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, dependent)
    if len(ordered) < len(deps):
        stuck = {index for index, count in enumerate(waiting) if count > 0}
        raise StateError(_cycle_message(_find_cycle(stuck, deps), chunks))
    return ordered


def _find_cycle(stuck: set[int], deps: list[set[int]]) -> list[int]:
    """One cycle among ``stuck`` chunks (each has a stuck dependency, so walking finds one)."""
    path: list[int] = []
    seen: dict[int, int] = {}
    node = min(stuck)
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = min(d for d in deps[node] if d in stuck)
    return [*path[seen[node] :], node]


def _cycle_message(cycle: list[int], chunks: Sequence[Chunk]) -> str:
    steps = " -> ".join(f"{chunks[i].ref} ({chunks[i].where})" for i in cycle[:-1])
    return f"requisite cycle: {steps} -> {chunks[cycle[-1]].ref}"
