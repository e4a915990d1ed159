"""State modules: one file each, registered in ``REGISTRY`` (module name -> its FUNCTIONS)."""
