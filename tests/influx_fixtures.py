"""Session fixtures: a real InfluxDB 1.6 and a real VictoriaMetrics on loopback (pytest plugin)."""
