"""saline: an event-driven remediation engine for a Chef Infra Server HA cluster."""

__version__ = "0.1.0"
