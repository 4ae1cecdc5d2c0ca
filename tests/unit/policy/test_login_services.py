"""The one conversion from an iSCSI login to the services its path offers, used by the
controller (per-I/O guard flags) and the host (path selection)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from difs.controller.enforcement import session_flags
from difs.iscsi.params import NegotiatedParams
from difs.policy.fast import (
    AUTH,
    DATA_DIGEST,
    HEADER_DIGEST,
    MUTUAL_AUTH,
    NegotiatedServices,
    Requirement,
    path_satisfies,
)
from difs.policy.services import PolicyServices

AUTHS = {  # (AuthMethod, mutual CHAP) -> (policy authentication, flags)
    ("None", False): ("none", 0),
    ("CHAP", False): ("chap", AUTH),
    ("CHAP", True): ("mutual_chap", AUTH | MUTUAL_AUTH),
}


def params(hd: bool, dd: bool, auth_method: str, mutual: bool) -> NegotiatedParams:
    return NegotiatedParams(initiator_name="i", target_name="t", session_type="Normal",
                            header_digest=hd, data_digest=dd, auth_method=auth_method,
                            chap_user="u" if auth_method == "CHAP" else None,
                            mutual_chap=mutual)


@pytest.mark.parametrize("hd, dd, auth", list(itertools.product(
    (False, True), (False, True), AUTHS)))
def test_each_digest_and_auth_combination(hd, dd, auth):
    authentication, auth_flags = AUTHS[auth]
    services = NegotiatedServices.from_login(params(hd, dd, *auth))
    expected = (HEADER_DIGEST if hd else 0) | (DATA_DIGEST if dd else 0) | auth_flags
    assert services.flags == expected
    assert services == NegotiatedServices(header_digest=hd, data_digest=dd,
                                          authentication=authentication)
    # the controller's guard flags are the same conversion
    assert session_flags(SimpleNamespace(params=params(hd, dd, *auth))) == expected


@pytest.mark.parametrize("auth", AUTHS)
def test_a_login_satisfies_the_policy_that_asks_for_what_it_negotiated(auth):
    authentication, _ = AUTHS[auth]
    policy = PolicyServices.model_validate({
        "integrity": {"header_digest": True, "data_digest": True},
        "security": {"authentication": authentication}})
    requirement = Requirement.from_policy(policy)
    assert path_satisfies(NegotiatedServices.from_login(params(True, True, *auth)), requirement)
    assert not path_satisfies(NegotiatedServices.from_login(params(True, False, *auth)),
                              requirement)


@pytest.mark.parametrize("auth_method, mutual", [("None", True), ("KRB5", False),
                                                 ("SRP", True)])
def test_invalid_combinations_are_refused(auth_method, mutual):
    with pytest.raises(ValueError):
        params(True, True, auth_method, mutual)
    # and a record that skipped the checks is not turned into services either
    loose = SimpleNamespace(header_digest=True, data_digest=True, auth_method=auth_method,
                            mutual_chap=mutual)
    with pytest.raises(ValueError, match="is not a service"):
        NegotiatedServices.from_login(loose)
