"""Minion beacons: small checks whose changes of state become events.

``minion.beacons.registry.BEACONS`` lists the built-in beacon types by the name used in
the minion config; ``minion.plugins.load_beacons`` adds those of installed plugins.
"""
