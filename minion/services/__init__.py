"""Service providers: one ABC, one implementation per file, chosen by ``select_provider``."""
