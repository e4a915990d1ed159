"""The Chef HA lab: three backends and two frontends on loopback, with real services.

``cluster`` lays out and starts it, ``pg``/``procs`` drive the real PostgreSQL, etcd and
Elasticsearch stand-in processes, ``backend_ctl``/``server_ctl`` are the shims the formula
calls instead of ``chef-backend-ctl``/``chef-server-ctl``, ``faults`` breaks things on
purpose and ``demo`` shows saline healing them.
"""
