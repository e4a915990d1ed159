"""The local lab: a master and minions on loopback as background processes, for trying saline."""
