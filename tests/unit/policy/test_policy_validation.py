"""Policy documents: validation with clear messages, versions, tiers."""

from __future__ import annotations

import pytest

from difs.policy import (
    DEFAULT_TIERS,
    GOLD,
    AuthMethod,
    PIType,
    PolicyDocument,
    PolicyServices,
    PolicyValidationError,
    QosService,
    parse_dscp,
    validate_policy,
)


def test_valid_policy_round_trips_through_json():
    doc = validate_policy(
        {
            "name": "db-prod",
            "services": {
                "integrity": {"header_digest": True, "data_digest": True, "protection_information": 1},
                "security": {"authentication": "mutual_chap", "tls": True},
                "qos": {"reservation_iops": 500, "limit_iops": 2000, "dscp": "af41"},
                "isolation": {"exclusive": True, "tag": "tenant-a", "vlan": 100},
            },
        }
    )
    assert doc.services.integrity.protection_information is PIType.TYPE1
    assert doc.services.security.authentication is AuthMethod.MUTUAL_CHAP
    assert doc.services.qos.dscp == 34
    assert doc.version == 1
    again = PolicyDocument.model_validate_json(doc.model_dump_json())
    assert again == doc


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"name": "p", "services": {"integrity": {}, "compression": {}}}, "unknown service 'compression'"),
        ({"name": "p", "services": {"integrity": {"crc": True}}}, "services.integrity.crc: unknown field 'crc'"),
        (
            {"name": "p", "services": {"qos": {"reservation_iops": 900, "limit_iops": 500}}},
            "reservation_iops (900) is above limit_iops (500)",
        ),
        ({"name": "p", "services": {"qos": {"reservation_iops": -1}}}, "services.qos.reservation_iops"),
        ({"name": "p", "services": {"qos": {"weight": 0}}}, "services.qos.weight"),
        ({"name": "p", "services": {"qos": {"dscp": 64}}}, "DSCP 64 is out of range"),
        ({"name": "p", "services": {"qos": {"dscp": "gold"}}}, "unknown DSCP class 'gold'"),
        ({"name": "p", "services": {"isolation": {"vlan": 4095}}}, "services.isolation.vlan"),
        ({"name": "p", "services": {"isolation": {"tag": "Bad Tag"}}}, "an isolation tag is"),
        ({"name": "p", "services": {"integrity": {"protection_information": 2}}}, "protection_information"),
        ({"name": "p", "services": {"security": {"authentication": "kerberos"}}}, "authentication"),
        ({"name": "Bad Name"}, "name:"),
    ],
)
def test_invalid_policies_get_clear_messages(data, expected):
    with pytest.raises(PolicyValidationError) as info:
        validate_policy(data)
    assert any(expected in p for p in info.value.problems), info.value.problems


def test_every_update_changes_the_version():
    doc = PolicyDocument(name="p")
    v2 = doc.revise(services=PolicyServices(qos=QosService(limit_iops=10)))
    v3 = v2.revise()  # even an update that changes nothing gets a new version
    assert (doc.version, v2.version, v3.version) == (1, 2, 3)
    assert v3.services == v2.services


def test_normalized_drops_empty_services():
    s = PolicyServices.model_validate({"integrity": {}, "qos": {"limit_iops": 5}})
    assert s.normalized() == PolicyServices(qos=QosService(limit_iops=5))
    assert PolicyServices.model_validate({"security": {}}).empty


def test_dscp_names_and_numbers():
    assert parse_dscp("EF") == 46
    assert parse_dscp("cs1") == 8
    assert parse_dscp("10") == 10
    with pytest.raises(ValueError):
        parse_dscp(True)


def test_default_tiers():
    assert set(DEFAULT_TIERS) == {"gold", "silver", "bronze"}
    assert GOLD.services.integrity.protection_information is PIType.TYPE1
    assert GOLD.services.security.authentication is AuthMethod.MUTUAL_CHAP
    assert GOLD.services.qos.reservation_iops
    assert DEFAULT_TIERS["silver"].services.integrity.data_digest
    assert DEFAULT_TIERS["bronze"].services.empty
    assert GOLD.services.describe()[:3] == ["header digest", "data digest", "PI type 1"]
