"""Signer-side key audit, offline: recorded passes through the pure judge and the SQLite history."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import dns.dnssec
import pytest
from signedzone import Key, SignedZone, make_key

from probe.audit.auditor import AuditConfig, Auditor, AuditReport, assess
from probe.audit.findings import AuditPolicy, ExpiryMargin, Finding, exit_status
from probe.audit.history import KEEP_S, AuditHistory, Version, ZoneMeta, key_history
from probe.audit.snapshot import ParentSnapshot, Role, ServerSnapshot, ZoneSnapshot
from probe.codes import FindingCode, FindingSeverity
from probe.errors import ConfigError
from probe.observation import FLAG_AA, FLAG_QR, Observation, Outcome, RRsetObs

ZONE = "14.in-addr.arpa."
T0 = 1_800_000_000.0
POLICY = AuditPolicy(margin=300.0, inconsistent_window=600.0)


def _server(z: SignedZone, at: float, published: list[Key], signer: Key | None, *,
            label: str = "192.0.2.1", role: Role = Role.NS, ksk: Key | None = None,
            serial: int = 1, expiration: float | None = None) -> ServerSnapshot:
    z.now = at
    dnskey = z.dnskey_obs(published, sign_with=ksk or z.ksk, server=f"auth:{label}", started=at,
                          expiration=expiration)
    soa = z.record_obs(z.name, "SOA", [f"ns1.{z.name} hostmaster.{z.name} {serial} 3600 600 "
                                       "86400 60"], signer, server=f"auth:{label}",
                       expiration=expiration)
    ptr = z.record_obs(f"1.0.0.{z.name}", "PTR", ["host.example."], signer,
                       server=f"auth:{label}", expiration=expiration)
    return ServerSnapshot(label, role, dnskey, soa, (ptr,))


def _ds(z: SignedZone, at: float, keys: list[Key], *, ttl: int = 3600,
        label: str = "192.0.2.99") -> ParentSnapshot:
    texts = tuple(sorted(dns.dnssec.make_ds(z.name, k.dnskey, "SHA256").to_text() for k in keys))
    obs = Observation(f"auth:{label}", label, 53, z.name, "DS", False, False, at, Outcome.REPLY,
                      rtt_ms=1.0, rcode=0, flags=FLAG_QR | FLAG_AA,
                      answer=(RRsetObs(z.name, "DS", ttl, texts, ()),) if texts else ())
    return ParentSnapshot(label, obs)


class Run:
    """Passes over one zone, the history carried from one to the next as the Auditor does."""

    def __init__(self, policy: AuditPolicy = POLICY) -> None:
        self.history: list[Version] = []
        self.meta: ZoneMeta | None = None
        self.policy = policy

    def audit(self, at: float, servers: list[ServerSnapshot],
              parents: tuple[ParentSnapshot, ...] = ()) -> dict[FindingCode, Finding]:
        snap = ZoneSnapshot(ZONE, at, tuple(servers), "in-addr.arpa.", parents)
        res, self.history, self.meta = assess(snap, self.history, self.meta, self.policy)
        found = {f.code: f for f in res.findings}
        assert len(found) == len(res.findings), "one finding per code and zone"
        return found


@pytest.fixture
def z() -> SignedZone:
    return SignedZone(ZONE, T0, dnskey_ttl=3600)


def test_bad_cutover_is_unsafe_at_publication(z: SignedZone) -> None:
    run = Run()
    first = run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)])
    assert set(first) == {FindingCode.NO_HISTORY}  # says so instead of guessing
    # 2012: the standby's ZSK published and used in one step
    got = run.audit(T0 + 10, [_server(z, T0 + 10, [z.ksk, z.standby], z.standby)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.severity is FindingSeverity.CRITICAL
    assert f.new_keytags == (z.standby.tag,)
    assert set(f.keytags) == {z.ksk.tag, z.zsk.tag}
    assert f.published_before_use_s == 0.0
    assert f.old_set_last_served == T0 + 10  # may have been served until the change was seen
    assert f.at_risk_until == T0 + 10 + 3600
    assert f"key {z.standby.tag} published 0 s before use" in f.detail
    assert FindingCode.KEY_CHANGE in got
    assert got[FindingCode.KEY_CHANGE].new_keytags == (z.standby.tag,)
    # Still at risk later; over once the old set has expired everywhere.
    assert FindingCode.UNSAFE_ROLLOVER in run.audit(
        T0 + 3000, [_server(z, T0 + 3000, [z.ksk, z.standby], z.standby)])
    assert FindingCode.UNSAFE_ROLLOVER not in run.audit(
        T0 + 3700, [_server(z, T0 + 3700, [z.ksk, z.standby], z.standby)])


def test_prepublished_rollover_is_only_key_changes(z: SignedZone) -> None:
    run = Run()
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)])
    t1 = T0 + 60
    got = run.audit(t1, [_server(z, t1, [z.ksk, z.zsk, z.standby], z.zsk)])
    assert set(got) - {FindingCode.NO_HISTORY} == {FindingCode.KEY_CHANGE}
    assert got[FindingCode.KEY_CHANGE].new_keytags == (z.standby.tag,)
    for t in range(int(t1) + 600, int(t1) + 3900, 600):  # audits go on meanwhile
        assert FindingCode.KEY_CHANGE not in run.audit(
            t, [_server(z, t, [z.ksk, z.zsk, z.standby], z.zsk)])
    t2 = t1 + 3600 + 300 + 1  # DNSKEY TTL + margin after publication
    got = run.audit(t2, [_server(z, t2, [z.ksk, z.zsk, z.standby], z.standby)])
    assert got == {}  # history now covers TTL + margin: no-history is gone too
    t3 = t2 + 600
    got = run.audit(t3, [_server(z, t3, [z.ksk, z.standby], z.standby)])
    assert set(got) == {FindingCode.KEY_CHANGE}
    assert "removed " + str(z.zsk.tag) in got[FindingCode.KEY_CHANGE].detail


@pytest.mark.parametrize("wait", [100.0, 3550.0])  # 3550: seen unpublished < TTL + margin ago
def test_prepublication_too_short_is_unsafe(z: SignedZone, wait: float) -> None:
    run = Run()
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)])
    run.audit(T0 + 60, [_server(z, T0 + 60, [z.ksk, z.zsk, z.standby], z.zsk)])
    t = T0 + 60 + wait
    got = run.audit(t, [_server(z, t, [z.ksk, z.zsk, z.standby], z.standby)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.published_before_use_s == wait
    # the set without the key was last served until the audit that saw it published
    assert f.at_risk_until == T0 + 60 + 3600


def test_withdrawn_key_used_again_is_unsafe(z: SignedZone) -> None:
    """The standby signer's key in 2012: once published, withdrawn, then used again."""
    run = Run()
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk, z.standby], z.zsk)])
    for t in range(int(T0) + 600, int(T0) + 9000, 600):
        run.audit(t, [_server(z, t, [z.ksk, z.zsk], z.zsk)])
    t = T0 + 9000
    got = run.audit(t, [_server(z, t, [z.ksk, z.standby], z.standby)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert f.new_keytags == (z.standby.tag,)
    assert f.published_before_use_s == 0.0


def test_key_signing_but_unpublished_on_one_server(z: SignedZone) -> None:
    run = Run()
    a = "192.0.2.1"
    b = "192.0.2.2"
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk, label=a),
                   _server(z, T0, [z.ksk, z.zsk], z.zsk, label=b)])
    t = T0 + 5000
    got = run.audit(t, [_server(z, t, [z.ksk, z.zsk, z.standby], z.standby, label=a),
                        _server(z, t, [z.ksk, z.zsk], z.zsk, label=b)])
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert "not published by every server" in f.detail
    assert b in f.servers
    assert f.at_risk_until == t + 3600  # b still serves the set without it


def test_standby_with_other_keys_is_a_mismatch_until_synced(z: SignedZone) -> None:
    run = Run()
    standby = "192.0.2.50"
    got = run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk),
                         _server(z, T0, [z.ksk, z.standby], z.standby, label=standby,
                                 role=Role.STANDBY)])
    f = got[FindingCode.SIGNER_KEY_MISMATCH]
    assert f.severity is FindingSeverity.CRITICAL
    assert f.servers == (standby,)
    assert f.new_keytags == tuple(sorted({z.ksk.tag, z.standby.tag}))
    assert f"standby {standby} publishes" in f.detail
    # A standby never counts as a server resolvers use: no unsafe-rollover from it.
    assert FindingCode.UNSAFE_ROLLOVER not in got
    got = run.audit(T0 + 60, [_server(z, T0 + 60, [z.ksk, z.zsk], z.zsk),
                              _server(z, T0 + 60, [z.ksk, z.zsk], z.zsk, label=standby,
                                      role=Role.STANDBY)])
    assert FindingCode.SIGNER_KEY_MISMATCH not in got
    # Same keys published, signing with another published key: a safe switch, no finding.
    got = run.audit(T0 + 120, [_server(z, T0 + 120, [z.ksk, z.zsk, z.standby], z.zsk),
                               _server(z, T0 + 120, [z.ksk, z.zsk, z.standby], z.standby,
                                       label=standby, role=Role.STANDBY)])
    assert FindingCode.SIGNER_KEY_MISMATCH not in got


def test_ksk_swap_without_double_ds_is_unsafe_on_the_ds_side(z: SignedZone) -> None:
    run = Run()
    ksk2 = make_key(True)
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)], (_ds(z, T0, [z.ksk], ttl=7200),))
    t = T0 + 30
    got = run.audit(t, [_server(z, t, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t, [ksk2], ttl=7200),))
    f = got[FindingCode.UNSAFE_ROLLOVER]
    assert "DS set" in f.detail
    assert f.new_keytags == (ksk2.tag,)
    assert f.keytags == (z.ksk.tag,)
    assert f.at_risk_until == t + 7200
    assert "192.0.2.99" in f.servers


def test_double_ds_rollover_is_safe(z: SignedZone) -> None:
    run = Run()
    ksk2 = make_key(True)
    run.audit(T0, [_server(z, T0, [z.ksk, z.zsk], z.zsk)], (_ds(z, T0, [z.ksk], ttl=600),))
    t1 = T0 + 60  # the new DS is added first
    run.audit(t1, [_server(z, t1, [z.ksk, z.zsk], z.zsk)], (_ds(z, t1, [z.ksk, ksk2], ttl=600),))
    t2 = t1 + 3901  # after the DS TTL + margin (and the history covers the DNSKEY TTL)
    got = run.audit(t2, [_server(z, t2, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t2, [z.ksk, ksk2], ttl=600),))
    assert FindingCode.UNSAFE_ROLLOVER not in got
    t3 = t2 + 60
    got = run.audit(t3, [_server(z, t3, [ksk2, z.zsk], z.zsk, ksk=ksk2)],
                    (_ds(z, t3, [ksk2], ttl=600),))
    assert FindingCode.UNSAFE_ROLLOVER not in got


def test_inconsistent_servers_after_the_window_compare_data_not_ttls(z: SignedZone) -> None:
    run = Run()
    a, b = "192.0.2.1", "192.0.2.2"

    def both(t: float, serial_b: int) -> list[ServerSnapshot]:
        return [_server(z, t, [z.ksk, z.zsk], z.zsk, label=a, serial=2),
                _server(z, t, [z.ksk, z.zsk], z.zsk, label=b, serial=serial_b)]

    assert FindingCode.INCONSISTENT_SERVERS not in run.audit(T0, both(T0, 1))
    assert FindingCode.INCONSISTENT_SERVERS not in run.audit(T0 + 300, both(T0 + 300, 1))
    f = run.audit(T0 + 600, both(T0 + 600, 1))[FindingCode.INCONSISTENT_SERVERS]
    assert f.severity is FindingSeverity.WARNING
    assert f.servers == (a, b)
    assert "serial 1" in f.detail and "serial 2" in f.detail
    assert FindingCode.INCONSISTENT_SERVERS not in run.audit(T0 + 660, both(T0 + 660, 2))
    assert run.meta is not None and run.meta.inconsistent_since is None
    # Same data with different TTLs is not a disagreement.
    s1 = _server(z, T0 + 720, [z.ksk, z.zsk], z.zsk, label=a, serial=2)
    z.dnskey_ttl = 60
    s2 = _server(z, T0 + 720, [z.ksk, z.zsk], z.zsk, label=b, serial=2)
    z.dnskey_ttl = 3600
    run.audit(T0 + 720, [s1, s2])
    assert run.meta is not None and run.meta.inconsistent_since is None


@pytest.mark.parametrize(("left_days", "severity"), [
    (1.0, FindingSeverity.CRITICAL),  # 1 of 31 days left: under 10 %
    (5.0, FindingSeverity.WARNING),  # 5 of 35: under 20 %
    (20.0, None),
])
def test_signature_expiry_margins(z: SignedZone, left_days: float,
                                  severity: FindingSeverity | None) -> None:
    z.now = T0
    exp = T0 + left_days * 86400
    # record_obs signs from now - 3600: lifetime ~ left + 30 days when inception is 30 days back
    srv = _server(z, T0, [z.ksk, z.zsk], z.zsk, expiration=exp)
    srv = _with_inception(z, srv, T0 - 30 * 86400, exp)
    got = Run().audit(T0, [srv])
    f = got.get(FindingCode.SIGNATURE_EXPIRY)
    assert (f.severity if f else None) is severity


def _with_inception(z: SignedZone, srv: ServerSnapshot, inception: float,
                    expiration: float) -> ServerSnapshot:
    soa = z.record_obs(z.name, "SOA", [f"ns1.{z.name} hostmaster.{z.name} 1 3600 600 86400 60"],
                       z.zsk, server=f"auth:{srv.server}", inception=inception,
                       expiration=expiration)
    dnskey = z.dnskey_obs([z.ksk, z.zsk], server=f"auth:{srv.server}", started=srv.dnskey.started,
                          expiration=expiration)
    return ServerSnapshot(srv.server, srv.role, dnskey, soa, ())


def test_signature_shorter_than_ttl_warns(z: SignedZone) -> None:
    policy = AuditPolicy(margin=300.0, expiry_warning=ExpiryMargin(seconds=60),
                         expiry_critical=ExpiryMargin(seconds=30))
    srv = _server(z, T0, [z.ksk, z.zsk], z.zsk, expiration=T0 + 1000)  # TTL 3600 > 1000 s
    f = Run(policy).audit(T0, [srv])[FindingCode.SIGNATURE_EXPIRY]
    assert f.severity is FindingSeverity.WARNING
    assert "shorter than the TTL" in f.detail


def test_expiry_margin_parsing() -> None:
    assert ExpiryMargin.parse("20%").percent == 20.0
    assert ExpiryMargin.parse("5d").seconds == 5 * 86400
    assert ExpiryMargin.parse("90").seconds == 90
    for bad in ("", "x", "120%", "5y", "-1d"):
        with pytest.raises(ConfigError):
            ExpiryMargin.parse(bad)
    with pytest.raises(ConfigError):
        AuditPolicy(margin=-1)


def test_no_server_answered_and_exit_status(z: SignedZone) -> None:
    dead = Observation("auth:192.0.2.1", "192.0.2.1", 53, ZONE, "DNSKEY", False, False, T0,
                       Outcome.TIMEOUT, attempts=3)
    got = Run().audit(T0, [ServerSnapshot("192.0.2.1", Role.NS, dead, dead)])
    assert set(got) == {FindingCode.NO_SERVER_ANSWERED}
    assert exit_status(got.values(), audited=False) == 1
    assert exit_status([], audited=False) == 3
    assert exit_status([], audited=True) == 0
    info = Finding(FindingCode.KEY_CHANGE, ZONE, FindingSeverity.INFO, "x")
    assert exit_status([info], audited=True) == 0


def test_snapshot_replays_from_json(z: SignedZone) -> None:
    snap = ZoneSnapshot(ZONE, T0, (_server(z, T0, [z.ksk, z.zsk], z.zsk),), "in-addr.arpa.",
                        (_ds(z, T0, [z.ksk]),), ("a note",))
    again = ZoneSnapshot.from_dict(snap.to_dict())
    assert again == snap
    a, _, _ = assess(snap, [], None, POLICY)
    b, _, _ = assess(again, [], None, POLICY)
    assert a.findings == b.findings and a.servers == b.servers


def test_history_survives_a_restart_and_prunes(tmp_path: Path, z: SignedZone) -> None:
    h = AuditHistory.open(tmp_path)
    auditor = Auditor(AuditConfig(), [], h, POLICY, clock=lambda: T0)
    auditor.record([ZoneSnapshot(ZONE, T0, (_server(z, T0, [z.ksk, z.zsk], z.zsk),))])
    h.close()
    h = AuditHistory.open(tmp_path)  # a new process: the history is on disk
    auditor = Auditor(AuditConfig(), [], h, POLICY, clock=lambda: T0 + 10)
    report = auditor.record([ZoneSnapshot(ZONE, T0 + 10, (
        _server(z, T0 + 10, [z.ksk, z.standby], z.standby),))])
    assert isinstance(report, AuditReport)
    assert {f.code for f in report.findings} >= {FindingCode.UNSAFE_ROLLOVER}
    assert report.exit_status == 2
    doc = report.to_json()
    assert doc["findings"][0].keys() >= {"code", "zone", "severity", "detail", "servers",
                                         "keytags", "new_keytags", "at_risk_until"}
    assert doc["summary"]["findings"]["critical"] == 1
    keys = {k["keytag"]: k for k in doc["zones"][0]["keys"]}
    assert keys[z.standby.tag]["published_first"] == T0 + 10
    assert keys[z.zsk.tag]["published_last"] == T0 and "signing_first" in keys[z.zsk.tag]
    rows = key_history(h.load(ZONE)[0])
    by_tag = {r["keytag"]: r for r in rows}
    assert by_tag[z.zsk.tag]["published_last"] == T0
    assert by_tag[z.standby.tag]["signing_first"] == T0 + 10
    # A version older than KEEP_S goes, except each server's latest.
    later = T0 + KEEP_S + 100
    Auditor(AuditConfig(), [], h, POLICY).record([ZoneSnapshot(ZONE, later, (
        _server(z, later, [z.ksk, z.standby], z.standby),))])
    versions, meta = h.load(ZONE)
    assert meta is not None and meta.first_pass == T0
    assert all(v.last_seen > T0 for v in versions)
    h.close()
    db = sqlite3.connect(tmp_path / "state.sqlite3")
    assert db.execute("SELECT count(*) FROM audit_zones").fetchone()[0] == 1


def test_zones_file_names_signers() -> None:
    from probe.zones import parse_zones

    [spec] = parse_zones(["14.in-addr.arpa primary=192.0.2.5 standby=192.0.2.6,[2001:db8::6]:5353"],
                         path="z.txt")
    assert spec.primary == (("192.0.2.5", 53),)
    assert spec.standby == (("192.0.2.6", 53), ("2001:db8::6", 5353))
    with pytest.raises(ConfigError) as exc:
        parse_zones(["", "14.in-addr.arpa standby=signer.example"], path="z.txt")
    assert "z.txt:2" in str(exc.value) and "standby=" in str(exc.value)


def test_audit_command_rejects_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                         ) -> None:
    from probe.cli import main

    bad = tmp_path / "zones.txt"
    bad.write_text("14.in-addr.arpa\n27.in-addr.arpa standby=not-an-address\n")
    with pytest.raises(SystemExit) as info:
        main(["audit", "--zones", str(bad), "--state-dir", str(tmp_path / "s"),
              "--resolver", "r=127.0.0.1:9"])
    assert info.value.code == 3
    assert f"{bad}:2" in capsys.readouterr().err
    for args in (["--expiry-warning", "5y"], ["--raw"], ["--margin", "-1"]):
        with pytest.raises(SystemExit) as info:
            main(["audit", "14.in-addr.arpa", "--state-dir", str(tmp_path / "s"), *args])
        assert info.value.code == 3, args
    assert not (tmp_path / "s").exists()  # nothing was asked or written
