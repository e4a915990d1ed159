"""Returners: the master's documents kept elsewhere (Elasticsearch, PostgreSQL, plugins)."""
