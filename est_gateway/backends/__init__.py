"""CA backends: the interface (``base``), the entry-point registry, and the built-in local CA."""
