"""Issue 9 lab set-up: the standby signer (111), the rollover with retire (110), 106 and 112 secure."""

from __future__ import annotations

import time

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
from dnslab import Lab, LabZone, query

pytestmark = pytest.mark.lab

CUT_ZONE = "106.in-addr.arpa."
ROLL_ZONE = "110.in-addr.arpa."
STANDBY_ZONE = "111.in-addr.arpa."
KSK_ZONE = "112.in-addr.arpa."
NS1 = "127.53.0.4"
PARENT = "127.53.0.3"  # in-addr.arpa.
STANDBY = "127.53.0.6"


def _not_secure(lab: Lab, qname: str) -> dict[str, str]:
    """Resolvers that do not answer `qname` PTR secure (NOERROR, AD, data), with what they said."""
    out = {}
    for r in lab.resolvers:
        resp = query(r.host, qname, "PTR", port=r.port)
        if not (resp.rcode() == dns.rcode.NOERROR and resp.flags & dns.flags.AD and resp.answer):
            out[r.name] = f"{dns.rcode.to_text(resp.rcode())} AD={bool(resp.flags & dns.flags.AD)}"
    return out


def _warm(lab: Lab, z: LabZone) -> None:
    """Every resolver caches the zone's data and DNSKEY set as served now."""
    for r in lab.resolvers:
        query(r.host, z.probe_names[0][0], "PTR", port=r.port)
        query(r.host, z.name, "DNSKEY", port=r.port)


def _serial(addr: str, zone: str) -> int:
    resp = query(addr, zone, "SOA", rd=False)
    return next(rd.serial for rrset in resp.answer if rrset.rdtype == dns.rdatatype.SOA for rd in rrset)


def _addresses(resp: dns.message.Message) -> set[str]:
    return {rd.address for sec in (resp.answer, resp.authority, resp.additional)
            for rrset in sec if rrset.rdtype == dns.rdatatype.A for rd in rrset}


@pytest.mark.parametrize("zone", [CUT_ZONE, ROLL_ZONE, STANDBY_ZONE, KSK_ZONE])
def test_audit_zones_start_secure(lab: Lab, zone: str) -> None:
    z = lab.zones[zone]
    assert z.auth_addresses == (NS1,)
    assert z.standby_addresses == ((STANDBY,) if zone == STANDBY_ZONE else ())
    second = z.standby_ksk_tag if zone == KSK_ZONE else z.standby_zsk_tag
    assert second is not None and len({z.ksk_tag, z.zsk_tag, second}) == 3
    assert lab.auth_key_tags(zone, NS1) == ({z.ksk_tag, z.zsk_tag}, {z.zsk_tag})
    assert lab.parent_ds_tags(zone) == {z.ksk_tag}
    if zone == KSK_ZONE:
        assert z.ds_ttl > z.dnskey_ttl
    assert not _not_secure(lab, z.probe_names[0][0])


def test_standby_signer_sync_and_desync(lab: Lab) -> None:
    z = lab.zones[STANDBY_ZONE]
    assert z.standby_zsk_tag is not None
    active = ({z.ksk_tag, z.zsk_tag}, {z.zsk_tag})
    own = ({z.ksk_tag, z.standby_zsk_tag}, {z.standby_zsk_tag})
    assert lab.auth_key_tags(STANDBY_ZONE, NS1) == active
    assert lab.auth_key_tags(STANDBY_ZONE, STANDBY) == own
    assert _serial(STANDBY, STANDBY_ZONE) != _serial(NS1, STANDBY_ZONE)  # it signs on its own
    # Not in the NS set: neither the zone's NS RRset nor the parent's delegation (NS + glue) names it.
    ns = query(NS1, STANDBY_ZONE, "NS", rd=False)
    assert {rd.target.to_text() for rrset in ns.answer if rrset.rdtype == dns.rdatatype.NS
            for rd in rrset} == {f"ns1.{STANDBY_ZONE}"}
    assert _addresses(query(NS1, f"ns1.{STANDBY_ZONE}", "A", rd=False)) == {NS1}
    referral = query(PARENT, f"1.0.0.{STANDBY_ZONE}", "PTR", rd=False)
    assert {rd.target.to_text() for rrset in referral.authority if rrset.rdtype == dns.rdatatype.NS
            for rd in rrset} == {f"ns1.{STANDBY_ZONE}"}
    assert _addresses(referral) == {NS1}
    try:
        lab.sync_standby(STANDBY_ZONE)
        assert lab.auth_key_tags(STANDBY_ZONE, STANDBY) == lab.auth_key_tags(STANDBY_ZONE, NS1) == active
        assert _serial(STANDBY, STANDBY_ZONE) == _serial(NS1, STANDBY_ZONE)
        lab.desync_standby(STANDBY_ZONE)
        assert lab.auth_key_tags(STANDBY_ZONE, STANDBY) == own
        assert lab.auth_key_tags(STANDBY_ZONE, NS1) == active
        # sync copies what ns1 serves now, not a fixed state
        lab.prepublish(STANDBY_ZONE)
        lab.sync_standby(STANDBY_ZONE)
        prepublished = ({z.ksk_tag, z.zsk_tag, z.standby_zsk_tag}, {z.zsk_tag})
        assert lab.auth_key_tags(STANDBY_ZONE, STANDBY) == prepublished
        # the resolvers never ask the standby
        assert not _not_secure(lab, z.probe_names[0][0])
    finally:
        lab.reset(STANDBY_ZONE)
    assert lab.state(STANDBY_ZONE) == "initial"
    assert lab.auth_key_tags(STANDBY_ZONE, NS1) == active
    assert lab.auth_key_tags(STANDBY_ZONE, STANDBY) == own


@pytest.mark.slow
def test_rollover_with_retire_stays_secure(lab: Lab) -> None:
    z = lab.zones[ROLL_ZONE]
    new = z.standby_zsk_tag
    assert new is not None
    qname = z.probe_names[0][0]
    _warm(lab, z)  # the caches hold the initial DNSKEY set, so a key used too early would fail
    assert not _not_secure(lab, qname)
    steps = [
        (lab.prepublish, "prepublish", ({z.ksk_tag, z.zsk_tag, new}, {z.zsk_tag})),
        (lab.roll, "rolled", ({z.ksk_tag, z.zsk_tag, new}, {new})),
        (lab.retire, "retired", ({z.ksk_tag, new}, {new})),
    ]
    try:
        for step, state, want in steps:
            changed = time.monotonic()
            step(ROLL_ZONE)
            assert lab.state(ROLL_ZONE) == state
            assert lab.served_key_tags(ROLL_ZONE) == want
            assert lab.auth_key_tags(ROLL_ZONE, NS1) == want
            # once the cached data expired the resolvers fetch the new signatures, with the
            # DNSKEY set they cached before this step
            time.sleep(z.record_ttl + 0.5)
            assert not _not_secure(lab, qname), state
            _warm(lab, z)
            # honour the DNSKEY TTL before the next step
            time.sleep(max(0.0, changed + z.dnskey_ttl + 0.5 - time.monotonic()))
    finally:
        lab.reset(ROLL_ZONE)
    assert lab.auth_key_tags(ROLL_ZONE, NS1) == ({z.ksk_tag, z.zsk_tag}, {z.zsk_tag})
    # The reset brings the withdrawn ZSK back at once; unasked, the caches expire within the
    # DNSKEY TTL and the zone is secure again for whoever uses it next.
    time.sleep(z.dnskey_ttl + 1)
    assert not _not_secure(lab, qname)
