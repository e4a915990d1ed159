"""Declarative states on this node: the state engine run inside a job.

The engine (Jinja, the state modules, their models) is imported on first use, not when
the minion starts: an idle minion stays small, and the first state job warms the minion
process (``preload``) so that later jobs fork with the engine already loaded.
"""

import random
import time
from collections.abc import Callable
from typing import Any

from minion.modules.base import Context, Outcome
from minion.modules.cmd import parse_bool
from minion.modules.pillar import fetch
from saline.errors import ExecutionError, StateError
from saline.masking import Masker


def preload() -> None:
    """Import the state engine into this process (the minion calls it before forking)."""
    import states.engine
    import states.modules  # noqa: F401


def _call(ctx: Context) -> Any:
    def call(fun: str, *args: Any, **kwargs: Any) -> Any:
        fn = ctx.functions.get(fun)
        if fn is None:
            raise StateError(f"no execution function {fun!r} on this minion")
        try:
            value = fn(ctx, *args, **kwargs)
        except ExecutionError as e:
            raise StateError(f"{fun}: {e}") from e
        return value.value if isinstance(value, Outcome) else value

    return call


def _prepare(ctx: Context, test: bool) -> Any:
    from minion.fileclient import CachedFileClient
    from states.modules.base import StateContext

    if ctx.channel is None:
        raise ExecutionError(
            "states need a file server: run them as a job, or with `saline call --local`"
        )
    pillar, secrets = fetch(ctx)
    return StateContext(
        minion_id=ctx.minion_id,
        grains=ctx.grains,
        pillar=pillar,
        test=test,
        call=_call(ctx),
        files=CachedFileClient(ctx.channel, ctx.config.cachedir / "files"),
        secrets=secrets,
    )


def _compile(ctx: Context, state_ctx: Any, names: tuple[str, ...]) -> Any:
    from states.engine import compile_states
    from states.modules import REGISTRY

    try:
        return compile_states(
            list(names) or None,
            files=state_ctx.files,
            minion_id=ctx.minion_id,
            grains=ctx.grains,
            pillar=state_ctx.pillar,
            call=state_ctx.call,
            registry=REGISTRY,
        )
    except StateError as e:
        raise ExecutionError(Masker(state_ctx.secrets).text(str(e))) from e


def apply(
    ctx: Context, *names: str, test: Any = False, failhard: Any = False, splay: float = 0
) -> Outcome:
    """Apply the named states (none: the highstate from top.yaml).

    test=true changes nothing and reports what would change (result None);
    failhard=true stops at the first failure; splay=S waits a random 0..S seconds first.
    Returns one entry per state: state, name, result, changes, comment, duration_ms.
    """
    from states.engine import run
    from states.modules import REGISTRY

    if float(splay) > 0:
        time.sleep(random.uniform(0, float(splay)))  # noqa: S311 - spreading load, not crypto
    state_ctx = _prepare(ctx, parse_bool(test, "test"))
    chunks = _compile(ctx, state_ctx, names)
    masker = Masker(state_ctx.secrets)
    try:
        results = run(chunks, state_ctx, REGISTRY, failhard=parse_bool(failhard, "failhard"))
    except ExecutionError as e:
        raise ExecutionError(masker.text(str(e))) from None
    except Exception as e:  # its message (and traceback) may quote a rendered secret
        raise ExecutionError(masker.text(f"{type(e).__name__}: {e}")) from None
    # results are masked by the engine already; masking again costs little and keeps
    # this function the one place that guarantees it
    data = masker.value([r.model_dump(mode="json") for r in results])
    return Outcome(data, 0 if all(r.result is not False for r in results) else 2)


def show(ctx: Context, *names: str) -> list[dict[str, Any]]:
    """The named states rendered, validated and ordered, as they would run (nothing runs)."""
    state_ctx = _prepare(ctx, True)
    chunks = _compile(ctx, state_ctx, names)
    masked: list[dict[str, Any]] = Masker(state_ctx.secrets).value(
        [c.model_dump(mode="json") for c in chunks]
    )
    return masked


FUNCTIONS = {"apply": apply, "show": show}
#: a job's time limit when it gives no ``timeout=``: a highstate may run a reconfigure
TIMEOUTS: dict[Callable[..., Any], float] = {apply: 3600.0}
