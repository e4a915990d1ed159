"""The state engine: render -> validate -> order (:func:`compile_states`), then :func:`run`.

Compiling does everything that can fail before the node is touched: missing files,
template and YAML errors, unknown functions or arguments, missing requisite targets and
cycles are :class:`StateError`. Running never raises for a state's sake: each chunk gets
a :class:`ChunkResult` whose comment says what was done, skipped or why it failed.
"""

import inspect
import time
from collections.abc import Mapping, Sequence
from typing import Any

from saline.masking import MASK, Masker
from states.compiler import StateLoader
from states.model import Chunk, ChunkResult, Registry
from states.modules.base import CallFunction, FileSource, StateContext, StateResult
from states.requisites import order_chunks

__all__ = ["MASK", "compile_states", "run", "show"]


def compile_states(
    names: Sequence[str] | None,
    *,
    files: FileSource,
    minion_id: str,
    grains: Mapping[str, Any],
    pillar: Mapping[str, Any],
    call: CallFunction,
    registry: Registry,
) -> list[Chunk]:
    """Load, validate and order the states ``names`` (None: the highstate of ``top.yaml``).

    ``call`` serves ``saline['mod.fun'](...)`` in templates. The chunks come back in run
    order with requisites resolved; an empty highstate gives ``[]``.

    :raises StateError: naming file, line and field of the first problem found.
    """
    loader = StateLoader(
        files=files, registry=registry, minion_id=minion_id, grains=grains, pillar=pillar, call=call
    )
    chosen = loader.top_names() if names is None else names
    return order_chunks(loader.load(chosen))


def show(chunks: Sequence[Chunk]) -> list[dict[str, Any]]:
    """Chunks as plain JSON-compatible data, in run order (for ``saline state show``)."""
    return [chunk.model_dump(mode="json") for chunk in chunks]


def run(
    chunks: Sequence[Chunk], ctx: StateContext, registry: Registry, failhard: bool = False
) -> list[ChunkResult]:
    """Run ``chunks`` (as ordered by :func:`compile_states`) and return a result for each.

    ``failhard`` (or ``failhard: true`` on a chunk) stops the run at the first failure;
    later chunks are reported as not run. Test mode is ``ctx.test``: state functions honour
    it, and a requirement that would change (result None) counts as satisfied. Strings in
    ``ctx.secrets`` are masked in every name, comment and change.
    """
    return _Runner(ctx, registry, failhard).run(chunks)


class _Runner:
    """One run: remembers results so requisites can consult them."""

    def __init__(self, ctx: StateContext, registry: Registry, failhard: bool) -> None:
        self._ctx = ctx
        self._registry = registry
        self._failhard = failhard
        self._done: dict[str, ChunkResult] = {}
        self._refs: dict[str, str] = {}
        # longest first, so a secret containing another is masked whole
        self._masker = Masker(ctx.secrets)

    def run(self, chunks: Sequence[Chunk]) -> list[ChunkResult]:
        self._refs = {chunk.key: chunk.ref for chunk in chunks}
        results: list[ChunkResult] = []
        stopped_after: str | None = None
        for chunk in chunks:
            if stopped_after is None:
                result = self._run_chunk(chunk)
                if result.result is False and (self._failhard or chunk.failhard):
                    stopped_after = chunk.key
            else:
                comment = f"not run: failhard after {stopped_after}"
                outcome = StateResult(result=False, comment=comment)
                result = self._result(chunk, outcome, 0.0, ran=False)
            self._done[chunk.key] = result
            results.append(result)
        return results

    def _run_chunk(self, chunk: Chunk) -> ChunkResult:
        start = time.perf_counter()
        blocked = self._blocked(chunk)
        outcome = blocked or self._apply(chunk)
        ran = blocked is None or blocked.result is not False  # a failed requisite: not run
        return self._result(chunk, outcome, (time.perf_counter() - start) * 1000, ran=ran)

    def _blocked(self, chunk: Chunk) -> StateResult | None:
        """Why requisites keep ``chunk`` from running, or None when it may run."""
        failed = [k for k in dict.fromkeys((*chunk.require, *chunk.watch)) if not self._ok(k)]
        if failed:
            refs = ", ".join(self._refs.get(key, key) for key in failed)
            return StateResult(result=False, comment=f"requisite failed: {refs}")
        if chunk.onfail and not any(self._failed(key) for key in chunk.onfail):
            return StateResult(result=True, comment="onfail requisites did not fail; skipped")
        if chunk.onchanges and not any(self._changed(key) for key in chunk.onchanges):
            return StateResult(result=True, comment="no changes in onchanges requisites; skipped")
        return None

    def _apply(self, chunk: Chunk) -> StateResult:
        """Call the function; then ``mod_watch`` when a watched state changed and the call
        itself neither failed nor changed anything (as SaltStack does): a command that ran,
        or a service just started, is not run or restarted a second time."""
        outcome = self._call(chunk, chunk.function)
        if outcome.result is False or outcome.changes:
            return outcome
        watched_changed = any(self._changed(key) for key in chunk.watch)
        if watched_changed and "mod_watch" in self._registry.get(chunk.module, {}):
            outcome = _merge(outcome, self._call(chunk, "mod_watch"))
        return outcome

    def _call(self, chunk: Chunk, function: str) -> StateResult:
        """Call ``module.function`` for ``chunk``; any exception becomes a failed result."""
        state = f"{chunk.module}.{function}"
        fn = self._registry.get(chunk.module, {}).get(function)
        if fn is None:
            return StateResult(result=False, comment=f"unknown state function {state}")
        kwargs = chunk.kwargs if function == chunk.function else _accepted(fn, chunk)
        try:
            outcome = fn(self._ctx, chunk.name, **kwargs)
        except Exception as e:  # a broken state fails its chunk, never the whole run
            return StateResult(result=False, comment=f"{state} raised {type(e).__name__}: {e}")
        if not isinstance(outcome, StateResult):
            kind = type(outcome).__name__
            return StateResult(result=False, comment=f"{state} returned {kind}, not StateResult")
        return outcome

    def _ok(self, key: str) -> bool:
        # None is "would change" in test mode: the requirement would be met by a real run
        done = self._done.get(key)
        return done is not None and done.result is not False

    def _failed(self, key: str) -> bool:
        done = self._done.get(key)
        return done is not None and done.result is False

    def _changed(self, key: str) -> bool:
        done = self._done.get(key)
        return done is not None and bool(done.changes)

    def _result(
        self, chunk: Chunk, outcome: StateResult, duration_ms: float, ran: bool = True
    ) -> ChunkResult:
        return ChunkResult(
            ran=ran,
            key=chunk.key,
            id=chunk.id,
            state=chunk.state,
            name=self._masker.text(chunk.name),
            sls=chunk.sls,
            result=outcome.result,
            changes=self._masker.value(outcome.changes),
            comment=self._masker.text(outcome.comment),
            duration_ms=duration_ms,
        )


def _accepted(fn: Any, chunk: Chunk) -> dict[str, Any]:
    """The chunk's arguments ``mod_watch`` accepts, plus ``sfun`` if it asks for it.

    ``mod_watch`` serves every function of its module, so it may take fewer arguments
    than the function that was declared.
    """
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return dict(chunk.kwargs)
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in chunk.kwargs.items() if takes_any or k in params}
    if "sfun" in params:
        kwargs["sfun"] = chunk.function
    return kwargs


def _merge(first: StateResult, second: StateResult) -> StateResult:
    """Combine the function's result with ``mod_watch``'s: the worse result, both stories."""
    results = (first.result, second.result)
    result: bool | None = True
    if any(r is False for r in results):
        result = False
    elif any(r is None for r in results):
        result = None
    return StateResult(
        result=result,
        changes={**first.changes, **second.changes},
        comment="; ".join(c for c in (first.comment, second.comment) if c),
    )
