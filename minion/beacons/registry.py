"""The built-in beacon types, by the name used in the minion config.

A module of its own (not the package ``__init__``) so that importing a submodule such as
``minion.beacons.config`` does not import every beacon and, through them, the minion's
config and execution modules.
"""

from minion.beacons.base import Beacon
from minion.beacons.chef_backend_status import ChefBackendStatusBeacon
from minion.beacons.chef_server_status import ChefServerStatusBeacon
from minion.beacons.config_drift import ConfigDriftBeacon
from minion.beacons.diskusage import DiskUsageBeacon
from minion.beacons.elasticsearch_health import ElasticsearchHealthBeacon
from minion.beacons.etcd_health import EtcdHealthBeacon
from minion.beacons.file import FileBeacon
from minion.beacons.load import LoadBeacon
from minion.beacons.migration_level import MigrationLevelBeacon
from minion.beacons.pg_replication import PgReplicationBeacon
from minion.beacons.process import ProcessBeacon
from minion.beacons.service import ServiceBeacon
from minion.beacons.time_drift import TimeDriftBeacon

BEACONS: dict[str, type[Beacon]] = {
    "service": ServiceBeacon,
    "file": FileBeacon,
    "diskusage": DiskUsageBeacon,
    "load": LoadBeacon,
    "process": ProcessBeacon,
    # Chef HA
    "pg_replication": PgReplicationBeacon,
    "etcd_health": EtcdHealthBeacon,
    "elasticsearch_health": ElasticsearchHealthBeacon,
    "migration_level": MigrationLevelBeacon,
    "chef_backend_status": ChefBackendStatusBeacon,
    "chef_server_status": ChefServerStatusBeacon,
    "time_drift": TimeDriftBeacon,
    "config_drift": ConfigDriftBeacon,
}
