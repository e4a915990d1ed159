"""Check one beacon once from a shell and print its observations as JSON lines.

Usage: ``python -m minion.beacons TYPE [PARAMS_JSON]``, for example::

    python -m minion.beacons diskusage '{"paths": {"/": 90}}'

Services are inspected through the provider a default minion config would select.
Exit codes: 0 checked, 2 unknown beacon type or invalid parameters.
"""

import json
import socket
import sys
from collections.abc import Sequence
from dataclasses import asdict

from pydantic import ValidationError

from minion.beacons.base import BeaconContext


def main(argv: Sequence[str] | None = None) -> int:
    from minion.config import MinionConfig
    from minion.plugins import load_beacons
    from minion.services.select import select_provider

    args = list(sys.argv[1:] if argv is None else argv)
    registry = load_beacons()
    if not args or args[0] not in registry:
        print(
            f"usage: python -m minion.beacons {{{','.join(sorted(registry))}}} [PARAMS_JSON]",
            file=sys.stderr,
        )
        return 2
    cls = registry[args[0]]
    try:
        config = cls.Config.model_validate(json.loads(args[1]) if len(args) > 1 else {})
    except (ValueError, ValidationError) as exc:
        print(f"{args[0]}: invalid parameters: {exc}", file=sys.stderr)
        return 2
    ctx = BeaconContext(socket.getfqdn(), select_provider(MinionConfig()))
    for obs in cls(config, ctx).check():
        print(json.dumps(asdict(obs), sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
