"""BeaconRunner: checks each configured beacon on its own interval and emits state changes.

Edge semantics, per (beacon instance, observation key):

* the first observation is remembered and emitted only if it is bad, or whatever its state
  with ``announce: true`` (so the master's view holds every node's state from the start);
* afterwards an event is emitted whenever the state changes (recoveries included);
* with ``reassert: N``, a bad state that persists is emitted again every N seconds;
* with ``refresh: N``, any state is emitted again every N seconds (values that move within
  a state, such as a clock offset, stay fresh in the master's view);
* a ``transient`` observation (the file beacon's ``changed``) is emitted every time it is
  seen and does not replace the key's remembered state.

Events go out through ``emit(tag_suffix, data)`` with ``tag_suffix = "{beacon}/{state}"``
(the daemon prefixes ``saline/beacon/{minion_id}/``) and ``data`` = the observation's data
plus ``key``, ``state``, ``bad``, ``beacon`` (the instance name) and ``previous`` (the
remembered state, or None).
"""

import asyncio
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from minion.beacons.base import Beacon, BeaconContext, Observation
from minion.beacons.config import BEACON_NAME_PATTERN, BeaconSpec
from saline.errors import ConfigError

log = logging.getLogger(__name__)

#: the daemon's sink for events: (tag suffix, data)
Emit = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True)
class ScheduledBeacon:
    """A beacon instance built from its spec, with its schedule."""

    name: str
    beacon: Beacon
    interval: float
    reassert: float | None
    #: emit the first observation of each key even when it is good
    announce: bool = False
    #: emit every key's observation again after this many seconds, whatever its state
    refresh: float | None = None


@dataclass
class _Tracked:
    state: str
    #: monotonic time this state was last emitted; None while it never was
    emitted_at: float | None


def build_beacon(
    name: str, spec: BeaconSpec, ctx: BeaconContext, registry: Mapping[str, type[Beacon]]
) -> ScheduledBeacon:
    """Validate ``spec``'s parameters with its beacon's ``Config`` and instantiate it.

    :raises ConfigError: ``beacons.<name>[.<field>]: <problem>`` for an invalid name, an
        unknown type, a bad parameter or a beacon that fails to initialise.
    """
    where = f"beacons.{name}"
    if not re.fullmatch(BEACON_NAME_PATTERN, name):
        raise ConfigError(f"{where}: invalid beacon name (allowed: {BEACON_NAME_PATTERN})")
    kind = spec.beacon or name
    cls = registry.get(kind)
    if cls is None:
        known = ", ".join(sorted(registry)) or "none"
        raise ConfigError(f"{where}: unknown beacon type {kind!r} (known: {known})")
    try:
        config = cls.Config.model_validate(spec.params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "".join(f".{part}" for part in err["loc"])
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{where}{field}: {err['msg']}{more}") from exc
    try:
        beacon = cls(config, ctx)
    except Exception as exc:
        raise ConfigError(f"{where}: cannot set up the {kind} beacon: {exc}") from exc
    return ScheduledBeacon(name, beacon, spec.interval, spec.reassert, spec.announce, spec.refresh)


class BeaconRunner:
    """Run beacons on their intervals, their checks in worker threads; never crash on them.

    Building the runner validates every spec (disabled ones too) and raises
    :class:`ConfigError` on the first problem, so the minion fails at start.
    """

    def __init__(
        self,
        specs: Mapping[str, BeaconSpec],
        ctx: BeaconContext,
        emit: Emit,
        registry: Mapping[str, type[Beacon]],
        on_checked: Callable[[str, float], None] | None = None,
    ) -> None:
        """:param on_checked: told (beacon name, seconds) after each check (metrics)."""
        self._on_checked = on_checked
        built = {
            name: (build_beacon(name, spec, ctx, registry), spec) for name, spec in specs.items()
        }
        #: enabled beacon instances by name
        self.beacons: dict[str, ScheduledBeacon] = {
            name: sched for name, (sched, spec) in built.items() if spec.enabled
        }
        self._emit = emit
        self._states: dict[tuple[str, str], _Tracked] = {}
        #: the last failure of each beacon's check, to log each distinct error once
        self._errors: dict[str, str] = {}

    async def run(self) -> None:
        """Check every enabled beacon on its own interval until cancelled (never returns)."""
        if not self.beacons:
            log.info("no beacons enabled")
            await asyncio.Event().wait()
        await asyncio.gather(*(self._loop(name) for name in self.beacons))

    async def _loop(self, name: str) -> None:
        interval = self.beacons[name].interval
        while True:
            started = time.monotonic()
            reason = await self.poll_once(name, started)
            log.debug("beacon %s: %s", name, reason)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def poll_once(self, name: str, now: float | None = None) -> str:
        """Check beacon ``name`` once (in a worker thread) and emit what its edges call for.

        :param now: monotonic time of the cycle (for ``reassert``); defaults to the clock.
        :returns: a sentence saying what the cycle did. Never raises for a failing check or
            a failing ``emit``: it logs each distinct error once and tries again next cycle.
        """
        sched = self.beacons[name]
        try:
            started = time.perf_counter()
            observations = await asyncio.to_thread(sched.beacon.check)
            if self._on_checked is not None:
                self._on_checked(name, time.perf_counter() - started)
            reason = self.observe(sched, observations, time.monotonic() if now is None else now)
        except Exception as exc:
            return self._failed(name, exc)
        if self._errors.pop(name, None) is not None:
            log.info("beacon %s works again", name)
        return reason

    def observe(self, sched: ScheduledBeacon, observations: list[Observation], now: float) -> str:
        """Apply the edge rules to one check's observations; emit and remember.

        :returns: which events were emitted, or that nothing changed.
        """
        emitted: list[str] = []
        for obs in observations:
            tracked = self._states.get((sched.name, obs.key))
            if self._should_emit(sched, obs, tracked, now):
                self._emit(f"{sched.name}/{obs.state}", self._event_data(sched, obs, tracked))
                emitted.append(f"{obs.state} ({obs.key})")
                if not obs.transient:
                    self._states[(sched.name, obs.key)] = _Tracked(obs.state, now)
            elif tracked is None and not obs.transient:
                self._states[(sched.name, obs.key)] = _Tracked(obs.state, None)
        if emitted:
            return f"emitted {', '.join(emitted)}"
        return f"no change in {len(observations)} observation(s)"

    @staticmethod
    def _should_emit(
        sched: ScheduledBeacon, obs: Observation, tracked: _Tracked | None, now: float
    ) -> bool:
        if obs.transient:
            return True
        if tracked is None:
            return obs.bad or sched.announce
        if obs.state != tracked.state:
            return True
        if sched.refresh is not None and (
            tracked.emitted_at is None or now - tracked.emitted_at >= sched.refresh
        ):
            return True
        return (
            obs.bad
            and sched.reassert is not None
            and tracked.emitted_at is not None
            and now - tracked.emitted_at >= sched.reassert
        )

    @staticmethod
    def _event_data(
        sched: ScheduledBeacon, obs: Observation, tracked: _Tracked | None
    ) -> dict[str, Any]:
        return {
            **obs.data,
            "key": obs.key,
            "state": obs.state,
            "bad": obs.bad,
            "beacon": sched.name,
            "previous": tracked.state if tracked is not None else None,
        }

    def _failed(self, name: str, exc: Exception) -> str:
        error = f"{type(exc).__name__}: {exc}"
        if self._errors.get(name) != error:
            log.error("beacon %s check failed: %s", name, error, exc_info=exc)
        else:
            log.debug("beacon %s check failed again: %s", name, error)
        self._errors[name] = error
        return f"check failed: {error}"
