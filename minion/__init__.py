"""The saline minion agent: connection and spool, executor, execution modules, grains."""
