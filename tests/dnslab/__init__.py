"""dnssec-probe test lab: a signed loopback DNS hierarchy and real validating resolvers."""

from .lab import (
    ALL_RESOLVERS,
    RESOLVER_ADDRS,
    Lab,
    LabError,
    LabResolver,
    LabZone,
    lab_available,
    query,
)

__all__ = [
    "ALL_RESOLVERS",
    "RESOLVER_ADDRS",
    "Lab",
    "LabError",
    "LabResolver",
    "LabZone",
    "lab_available",
    "query",
]
