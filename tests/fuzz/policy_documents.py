"""Fuzz target: policy documents and node advertisements as users and nodes write them
(src/difs/policy: validate_policy, PolicyServices, Advertisement), from JSON or TOML text;
the policy files the controller and the host take (``--policy FILE.json``: their
``resolve_policy``) and the controller's TOML configuration file (``load_config``).

Knobs: byte 0 bits 0-1 what is parsed (a policy document, bare services, an advertisement,
the controller configuration), bit 2 the text is TOML rather than JSON. The rest is the text.

Oracles: a policy file is a document or the controller's ConfigError / the host's HostError;
text that does not decode is the decoder's error (json.JSONDecodeError, UnicodeDecodeError,
tomllib.TOMLDecodeError, RecursionError for too deep nesting); a decoded value is a valid document or raises
PolicyValidationError / pydantic's ValidationError / ConfigError, nothing else. A valid
document derives its requirement, service class (0..63) and description without error,
dumps to JSON that validates back to an equal document, and its normalized services are a
fixed point.
"""

from __future__ import annotations

import json
import tempfile
import tomllib
from pathlib import Path

from pydantic import ValidationError

from difs.controller.config import load_config
from difs.controller.config import resolve_policy as controller_policy
from difs.controller.errors import ConfigError
from difs.host.agent import resolve_policy as host_policy
from difs.host.errors import HostError
from difs.policy import Advertisement, PolicyServices, Requirement
from difs.policy.document import PolicyDocument, PolicyValidationError, validate_policy

from fuzz import knobs

MAX_INPUT = 1 << 14
_SCRATCH = Path(tempfile.mkdtemp(prefix="difs-fuzz-"))


def TestOneInput(data: bytes) -> None:
    (flags,), text = knobs(data[:MAX_INPUT], 1)
    which = flags & 3
    if which == 3:
        controller_config(text)
        return
    if which == 0 and not flags & 4:
        policy_file(text)
    try:
        if flags & 4:
            value = tomllib.loads(text.decode("utf-8"))
        else:
            value = json.loads(text)
    except (ValueError, RecursionError):  # the decoders' own errors; not the parser's input
        return
    if which == 0:
        try:
            document = validate_policy(value)
        except PolicyValidationError as exc:
            assert exc.problems and all(isinstance(p, str) for p in exc.problems)
            return
        check_document(document)
    elif which == 1:
        try:
            services = PolicyServices.model_validate(value)
        except ValidationError:
            return
        check_services(services)
    else:
        try:
            advert = Advertisement.model_validate(value)
        except ValidationError:
            return
        assert Advertisement.model_validate_json(advert.model_dump_json()) == advert


def check_document(document: PolicyDocument) -> None:
    check_services(document.services)
    assert 0 <= document.service_class <= 63
    again = validate_policy(json.loads(document.model_dump_json()))
    assert again == document, (again, document)
    assert document.revise().version == document.version + 1


def check_services(services: PolicyServices) -> None:
    requirement = Requirement.from_policy(services)
    assert 0 <= requirement.service_class <= 63
    assert isinstance(services.describe(), list)
    normal = services.normalized()
    assert normal.normalized() == normal
    assert Requirement.from_policy(normal).service_class == requirement.service_class
    assert PolicyServices.model_validate_json(services.model_dump_json()) == services


def policy_file(text: bytes) -> None:
    path = _SCRATCH / "policy.json"
    path.write_bytes(text)
    try:
        services, meta = controller_policy(str(path))
    except ConfigError:
        services = None
    try:
        document = host_policy(str(path))
    except HostError:
        assert services is None
        return
    assert services == document.services.normalized().model_dump(mode="json", exclude_none=True)
    assert meta == {"policy_name": document.name, "policy_version": document.version}


def controller_config(text: bytes) -> None:
    if b"secret_file" in text:  # would read whatever file the input names
        return
    path = _SCRATCH / "controller.toml"
    path.write_bytes(text)
    try:
        config = load_config(path)
    except (ConfigError, UnicodeDecodeError):
        return
    assert config.model_validate_json(config.model_dump_json()) == config
