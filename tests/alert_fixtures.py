"""Session fixtures: a real Alertmanager on loopback and receivers it delivers to (pytest plugin)."""
