"""Job and event storage: one interface (``base.Store``), one implementation per file."""
