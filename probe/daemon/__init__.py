"""The monitor daemon (`dnssec-probe run`): config, schedule, round loop, self-metrics, logs."""
