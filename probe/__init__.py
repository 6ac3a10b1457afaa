"""dnssec-probe: external DNSSEC validation monitor for reverse zones, seen through validating resolvers."""

__version__ = "0.1.0"
