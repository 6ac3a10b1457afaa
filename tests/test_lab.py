"""Self-tests of the dnslab test lab (real NSD + Unbound/BIND/kresd/PowerDNS on loopback)."""

from __future__ import annotations

import dns.dnssec
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dnslab import Lab, LabZone, query

# The session `lab` fixture (conftest.py) starts the lab once, or skips/fails with the reason.
pytestmark = pytest.mark.lab


def _sig_tags(resp: dns.message.Message, rdtype: dns.rdatatype.RdataType) -> set[int]:
    return {
        rd.key_tag
        for rrset in resp.answer
        if rrset.rdtype == dns.rdatatype.RRSIG and rrset.covers == rdtype
        for rd in rrset
    }


def _dnskey_tags(resp: dns.message.Message) -> set[int]:
    return {
        dns.dnssec.key_id(rd) for rrset in resp.answer if rrset.rdtype == dns.rdatatype.DNSKEY for rd in rrset
    }


@pytest.mark.parametrize("zone", ["1.in-addr.arpa.", "3.0.1.0.0.2.ip6.arpa."])
def test_baseline_secure_on_every_resolver(lab: Lab, zone: str) -> None:
    lab = lab
    z = lab.zones[zone]
    for r in lab.resolvers:
        for qname, rdtype in [(z.probe_names[0][0], "PTR"), (zone, "SOA")]:
            resp = query(r.host, qname, rdtype, port=r.port)
            assert resp.rcode() == dns.rcode.NOERROR, (r.name, qname)
            assert resp.flags & dns.flags.AD, (r.name, qname)
            assert resp.answer, (r.name, qname)


@pytest.mark.parametrize("zone", ["36.in-addr.arpa.", "39.in-addr.arpa."])
def test_broken_zones_servfail_on_every_resolver(lab: Lab, zone: str) -> None:
    lab = lab
    qname = lab.zones[zone].probe_names[0][0]
    for r in lab.resolvers:
        assert query(r.host, qname, "PTR", port=r.port).rcode() == dns.rcode.SERVFAIL, r.name


def test_zone_metadata(lab: Lab) -> None:
    zones = lab.zones
    assert {"14.in-addr.arpa.", "27.in-addr.arpa.", "101.in-addr.arpa."} <= set(zones)
    for name in ("14.in-addr.arpa.", "27.in-addr.arpa."):
        z = zones[name]
        assert z.standby_zsk_tag is not None
        assert len({z.ksk_tag, z.zsk_tag, z.standby_zsk_tag}) == 3
        assert z.dnskey_ttl > z.record_ttl
    assert len(zones["101.in-addr.arpa."].probe_names) == 5000


def _auth(z: LabZone, qname: str, rdtype: str) -> dns.message.Message:
    return query(z.auth_addresses[0], qname, rdtype, rd=False)


def test_cutover_switches_signing_key_at_authority(lab: Lab) -> None:
    lab = lab
    z = lab.zones["14.in-addr.arpa."]
    qname = z.probe_names[0][0]
    lab.reset(z.name)  # the lab may be shared with scenario tests
    assert _sig_tags(_auth(z, qname, "PTR"), dns.rdatatype.PTR) == {z.zsk_tag}
    lab.cutover(z.name)
    try:
        assert _sig_tags(_auth(z, qname, "PTR"), dns.rdatatype.PTR) == {z.standby_zsk_tag}
        keys = _auth(z, z.name, "DNSKEY")
        assert _dnskey_tags(keys) == {z.ksk_tag, z.standby_zsk_tag}
        assert _sig_tags(keys, dns.rdatatype.DNSKEY) == {z.ksk_tag}  # the KSK is unchanged
    finally:
        lab.reset(z.name)
    assert _sig_tags(_auth(z, qname, "PTR"), dns.rdatatype.PTR) == {z.zsk_tag}


def test_prepublish_then_roll_at_authority(lab: Lab) -> None:
    lab = lab
    z = lab.zones["27.in-addr.arpa."]
    qname = z.probe_names[0][0]
    lab.prepublish(z.name)
    try:
        assert _dnskey_tags(_auth(z, z.name, "DNSKEY")) == {z.ksk_tag, z.zsk_tag, z.standby_zsk_tag}
        assert _sig_tags(_auth(z, qname, "PTR"), dns.rdatatype.PTR) == {z.zsk_tag}
        lab.roll(z.name)
        assert _sig_tags(_auth(z, qname, "PTR"), dns.rdatatype.PTR) == {z.standby_zsk_tag}
    finally:
        lab.reset(z.name)
