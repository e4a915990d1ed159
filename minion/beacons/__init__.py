"""Minion beacons: small checks whose changes of state become events.

``BEACONS`` lists the built-in beacon types by the name used in the minion config;
``minion.plugins.load_beacons`` adds those of installed plugins.
"""

from minion.beacons.base import Beacon
from minion.beacons.diskusage import DiskUsageBeacon
from minion.beacons.file import FileBeacon
from minion.beacons.load import LoadBeacon
from minion.beacons.process import ProcessBeacon
from minion.beacons.service import ServiceBeacon

BEACONS: dict[str, type[Beacon]] = {
    "service": ServiceBeacon,
    "file": FileBeacon,
    "diskusage": DiskUsageBeacon,
    "load": LoadBeacon,
    "process": ProcessBeacon,
}
