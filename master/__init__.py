"""The saline master daemon: minion socket, key ring, jobs, store, bus, client API."""
