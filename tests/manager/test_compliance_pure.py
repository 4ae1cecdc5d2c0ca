"""Compliance as a pure function: expected vs observed from the evidence of the last window, one
test per branch of ``difs.manager.compliance_rules.evaluate``."""

from __future__ import annotations

from test_placement_pure import ctl

from difs.manager.compliance_rules import (
    EstablishedPath,
    PathObservation,
    SessionObservation,
    Site,
    evaluate,
    merge_histograms,
)
from difs.policy import (
    BRONZE,
    GOLD,
    ContainerAdvert,
    NegotiatedServicesModel,
    NodeKind,
    NodeView,
    PolicyServices,
    ServiceCapabilities,
)
from difs.policy.evidence import LatencyRecorder, PathEvidence, PiEvidence, SessionEvidence, SessionServices

CAPS = ServiceCapabilities.model_validate({
    "integrity": {"header_digest": True, "data_digest": True, "pi_types": [1, 3]},
    "security": {"authentication": ["chap", "mutual_chap"], "tls": True, "at_host_encryption": True},
    "qos": {"reservation": True, "limit": True, "weight": True, "latency_target": True, "max_iops": 50000},
    "isolation": {"exclusive": True, "tags": True, "vlans": [100]},
})
INI = "iqn.2025-01.x:h"
GOLD_SVC = SessionServices(header_digest=True, data_digest=True, authentication="mutual_chap")
PLAIN_SVC = SessionServices()
GOLD_NEG = NegotiatedServicesModel(header_digest=True, data_digest=True, pi_types=[1], authentication="mutual_chap")
DIGESTS = PolicyServices.model_validate({"integrity": {"header_digest": True, "data_digest": True}})


def host(name):
    return NodeView(name=name, kind=NodeKind.HOST, services=CAPS, alive=True)


def site(controller=None, allowed=(INI,)):
    return Site(volume="v0", controller=controller or ctl("c1", CAPS),
                container=ContainerAdvert(name="p", capacity_bytes=1, pi_types=[1]), allowed_initiators=allowed)


def sess(*, channel=0, initiator=INI, commands=100, services=GOLD_SVC, checked=800, generated=0, guard=0,
         rejected=None, latency=None, age=5.0, window=10.0, digest_errors=0, write_bytes=None):
    return SessionObservation(
        controller="c1",
        evidence=SessionEvidence(volume="v0", initiator=initiator, channel=channel, services=services,
                                 commands=commands, write_bytes=commands * 4096 if write_bytes is None else write_bytes,
                                 pi=PiEvidence(checked_blocks=checked, generated_blocks=generated, guard_failures=guard),
                                 rejected=rejected or {}, digest_errors=digest_errors, latency=latency),
        window_seconds=window, age_seconds=age)


def path(*, channel=0, ios=100, services=GOLD_SVC, pi_failures=0, rejected=0, qos_waits=0, latency=None,
         age=5.0, window=10.0):
    return PathObservation(
        host="h",
        evidence=PathEvidence(application="db", controller="c1", channel=channel, services=services, ios=ios,
                              bytes=ios * 4096, digest_bytes=ios * 4096 if services.data_digest else 0,
                              pi=PiEvidence(generated_blocks=ios * 8, guard_failures=pi_failures),
                              rejected=rejected, qos_waits=qos_waits, latency=latency),
        window_seconds=window, age_seconds=age)


def hist(*ms):
    rec = LatencyRecorder()
    for v in ms:
        rec.record(int(v * 1_000_000))
    return rec.since(None)


def judge(services=GOLD.services, *, sessions=(), paths=(), bound=True, sites=None, **kw):
    return evaluate(services=services, sites=[site()] if sites is None else sites, host=host("h") if bound else None,
                    sessions=sessions, paths=paths, initiator=INI if bound else None, **kw)


def by(report):
    return {r.service: r for r in report.services}


# --- no evidence: unknown, never compliant from advertisements ---------------------------------


def test_unbound_without_io_is_unknown():
    r = judge(bound=False)
    assert r.state == "unknown"
    assert by(r)["integrity"].observed == "no I/O observed in the last 120 s; not bound to a host"


def test_established_paths_alone_are_never_compliant():
    r = judge(established=[EstablishedPath("c1", 0, GOLD_NEG), EstablishedPath("c1", 1, NegotiatedServicesModel())])
    assert r.state == "unknown"
    s = by(r)
    assert s["integrity"].state == "unknown"
    assert s["integrity"].observed == ("no I/O observed in the last 120 s; "
                                       "established paths that satisfy it: c1#0")
    assert s["qos"].state == "unknown" and s["qos"].observed == "no I/O observed in the last 120 s"
    assert s["availability"].state == "compliant"
    assert "enforcement" not in s  # nothing to say without I/O
    plain = judge(DIGESTS, established=[EstablishedPath("c1", 1, NegotiatedServicesModel())])
    assert by(plain)["integrity"].observed.endswith("no path the host established satisfies it")
    assert by(judge(DIGESTS))["integrity"].observed.endswith("the host advertises no established path")


def test_stale_evidence_does_not_count():
    r = judge(sessions=[sess(age=121)], paths=[path(age=121)], fresh_seconds=120)
    assert r.state == "unknown" and r.evidence == []
    assert by(judge(sessions=[sess(age=9)], paths=[path(age=9)], fresh_seconds=10))["integrity"].state == "compliant"


def test_evidence_from_one_side_only_is_unknown():
    r = judge(paths=[path()])
    assert by(r)["integrity"].state == "unknown"
    assert by(r)["integrity"].observed == "no controller reported commands of it in the last 120 s"
    r = judge(sessions=[sess()])
    assert by(r)["integrity"].observed == "the host reported no I/O of it in the last 120 s"


# --- integrity -------------------------------------------------------------------------------------


def test_digest_and_pi_io_on_both_sides_is_compliant_with_the_evidence_summarized():
    r = judge(sessions=[sess(latency=hist(0.3, 0.4))], paths=[path(latency=hist(0.5, 0.6, 2.0))])
    assert r.state == "compliant", r
    s = by(r)
    assert s["integrity"].observed == (
        "100 I/Os over c1#0; 409600 bytes under data digests, 0 digest errors caught; "
        "controller checked PI on 800 blocks, 0 PI errors caught; host generated PI for 800 and verified 0 blocks")
    assert s["security"].observed == "I/O only on paths and sessions with data digest, header digest, mutual chap"
    assert s["enforcement"].state == "compliant"
    ctl_line, host_line = r.evidence
    assert (ctl_line.side, ctl_line.volume, ctl_line.initiator, ctl_line.ios, ctl_line.p99_ms) == (
        "controller", "v0", INI, 100, 0.5)
    assert ctl_line.services == ["header digest", "data digest", "mutual chap"]
    assert (host_line.side, host_line.node, host_line.ios, host_line.bytes, host_line.p50_ms) == (
        "host", "h", 100, 409600, 1.0)
    assert host_line.window_seconds == 10 and host_line.age_seconds == 5


def test_host_io_on_a_path_without_digests_is_non_compliant():
    r = judge(sessions=[sess()], paths=[path(), path(channel=1, ios=5, services=PLAIN_SVC)])
    assert r.state == "non_compliant"
    s = by(r)
    assert s["integrity"].observed == ("5 I/Os on h path to c1 channel 1, whose login did not settle "
                                       "header digests and data digests")
    assert s["security"].observed == "5 I/Os on h path to c1 channel 1, authenticated by none"


def test_controller_session_without_digests_is_non_compliant():
    r = judge(DIGESTS, sessions=[sess(), sess(channel=1, commands=7, services=PLAIN_SVC)], paths=[path()])
    assert by(r)["integrity"].observed == (f"7 commands on c1 session of {INI} channel 1 (volume v0), "
                                           "whose login did not settle header digests and data digests")


def test_pi_not_checked_or_generated_by_the_controller_is_non_compliant():
    unchecked = by(judge(sessions=[sess(checked=0)], paths=[path()]))["integrity"]
    assert unchecked.state == "non_compliant"
    assert unchecked.observed == "the controller checked no PI on 100 commands moving 409600 bytes"
    no_data = by(judge(sessions=[sess(checked=0, commands=3, write_bytes=0)], paths=[path()]))["integrity"]
    assert no_data.state == "compliant"  # TEST UNIT READY and the like carry no PI
    generated = by(judge(sessions=[sess(generated=64)], paths=[path()]))["integrity"]
    assert generated.observed == "64 blocks written without PI from the host (the controller generated it)"
    unexplained = by(judge(sessions=[sess()], paths=[path(pi_failures=2)]))["integrity"]
    assert unexplained.observed == "2 PI check failures at the host on data the controller returned (unexplained)"


def test_corruption_caught_by_the_controller_is_reported_and_compliant():
    r = by(judge(sessions=[sess(guard=3, digest_errors=1)], paths=[path()]))["integrity"]
    assert r.state == "compliant"
    assert "3 PI errors caught" in r.observed and "1 digest errors caught" in r.observed


# --- security, isolation ---------------------------------------------------------------------------


def test_authentication_weaker_than_required_is_non_compliant():
    chap = SessionServices(header_digest=True, data_digest=True, authentication="chap")
    r = by(judge(sessions=[sess(services=chap)], paths=[path()]))["security"]
    assert r.observed == f"100 commands on c1 session of {INI} channel 0 (volume v0), authenticated by chap"
    tls = PolicyServices.model_validate({"security": {"tls": True}})
    assert "without TLS" in by(judge(tls, sessions=[sess()], paths=[path()]))["security"].observed
    hidden = PolicyServices.model_validate({"security": {"at_host_encryption": True}})
    r = by(judge(hidden, sessions=[sess()], paths=[path()]))["security"]
    assert r.state == "unknown" and "AES-XTS at the host is not in the evidence" in r.observed


def test_exclusive_isolation_from_access_lists_and_sessions():
    policy = PolicyServices.model_validate({"isolation": {"exclusive": True}})
    ok = judge(policy, sessions=[sess()], paths=[path()])
    assert ok.state == "compliant"
    intruder = by(judge(policy, sessions=[sess(), sess(initiator="iqn.2025-01.x:evil", commands=3)], paths=[path()]))
    assert intruder["isolation"].observed == "initiator iqn.2025-01.x:evil carried 3 commands to volume v0 on c1"
    refused = by(judge(policy, sessions=[sess(), sess(initiator="iqn.2025-01.x:evil", commands=0,
                                                      rejected={"unauthorized": 4})], paths=[path()]))
    assert refused["isolation"].state == "compliant"
    assert "refused 4 commands of initiator iqn.2025-01.x:evil" in refused["isolation"].observed
    assert refused["enforcement"].state == "compliant"  # another initiator refused: the app was not
    shared = judge(policy, sites=[site(allowed=(INI, "iqn.2025-01.x:other"))], sessions=[sess()], paths=[path()])
    assert by(shared)["isolation"].observed == "volumes visible to other initiators: v0"
    vlan = PolicyServices.model_validate({"isolation": {"vlan": 100}})
    r = by(judge(vlan, sessions=[sess()], paths=[path()]))["isolation"]
    assert r.state == "non_compliant" and "on no VLAN" in r.observed


# --- enforcement, availability, capabilities --------------------------------------------------------


def test_refusals_at_the_controller_are_non_compliant_by_reason():
    r = judge(BRONZE.services, sessions=[sess(rejected={"pi_format": 5, "service_class": 2})], paths=[path()])
    assert r.state == "non_compliant"
    assert by(r)["enforcement"].observed == "the controller refused 7 commands: pi_format 5, service_class 2"
    host_only = judge(BRONZE.services, paths=[path(ios=1, rejected=3)])
    assert by(host_only)["enforcement"].observed == "host h saw 3 I/Os refused by the controller"


def test_availability_from_leases_and_the_binding_state():
    down = evaluate(services=BRONZE.services, sites=[site(ctl("c1", CAPS, alive=False))], host=None)
    assert down.state == "non_compliant" and by(down)["availability"].observed == "lease expired: c1"
    failed = judge(BRONZE.services, binding_state="failed", binding_reason="ProtectionUnavailable: no PI path")
    assert by(failed)["availability"].state == "non_compliant"
    assert by(failed)["availability"].observed == "host h reports the binding failed: ProtectionUnavailable: no PI path"
    running = judge(BRONZE.services, binding_state="running")
    assert by(running)["availability"].observed == "all advertising; binding running on h"
    assert evaluate(services=BRONZE.services, sites=[], host=None).state == "unknown"


def test_a_withdrawn_capability_is_non_compliant_whatever_the_evidence():
    weak = ctl("c1", caps=ServiceCapabilities())
    r = judge(DIGESTS, sites=[site(weak)], sessions=[sess()], paths=[path()])
    assert by(r)["integrity"].state == "non_compliant"
    assert "does not offer" in by(r)["integrity"].observed


# --- qos -----------------------------------------------------------------------------------------------


def test_qos_from_observed_rates_and_latency_histograms():
    measured = by(judge(sessions=[sess(commands=30000)], paths=[path(ios=30000, qos_waits=5, latency=hist(1.0))]))
    assert measured["qos"].state == "compliant"
    assert measured["qos"].observed == "3000 IOPS, 12288000 B/s (controller), p50 <= 1 ms, p99 <= 1 ms (host)"
    starved = by(judge(sessions=[sess(commands=500)], paths=[path(ios=500, qos_waits=100)]))["qos"]
    assert starved.state == "non_compliant" and "only 50 IOPS while I/O waited; reservation 1000" in starved.observed
    limit = PolicyServices.model_validate({"qos": {"limit_iops": 100, "latency_target_ms": 2}})
    r = by(judge(limit, sessions=[sess(commands=5000, latency=hist(*[1.0] * 98, 8.0, 9.0))], paths=[]))["qos"]
    assert r.state == "non_compliant"
    assert "500 IOPS is above the limit 100" in r.observed
    assert "p99 latency <= 10 ms is above the target 2 ms" in r.observed


def test_merged_histograms_add_bucket_by_bucket():
    merged = merge_histograms([hist(0.3), None, hist(0.3, 40.0)])
    assert merged.total == 3 and merged.quantile_ms(0.99) == 50.0
    assert merge_histograms([None, hist()]) is None


def test_qos_from_the_host_alone_and_requirements_no_evidence_covers():
    r = by(judge(PolicyServices.model_validate({"qos": {"limit_iops": 100, "latency_target_ms": 5}}),
                 paths=[path(ios=500)]))["qos"]
    assert r.observed == "50 IOPS, 204800 B/s (host), no latency reported" and r.state == "compliant"
    tag = PolicyServices.model_validate({"isolation": {"tag": "vm7"}})
    r = by(judge(tag, sessions=[sess()], paths=[path()]))["isolation"]
    assert r.state == "unknown" and "the isolation tag is not in the evidence nodes report" in r.observed
