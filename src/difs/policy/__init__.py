"""The data-in-flight services vocabulary: policies, tiers, capabilities, satisfaction (pure).

For users and the manager (validated pydantic documents):

- :class:`PolicyServices` and its parts (:class:`IntegrityService`,
  :class:`SecurityService`, :class:`QosService`, :class:`IsolationService`);
  :class:`PolicyDocument` (named, versioned), :func:`validate_policy`.
- :data:`DEFAULT_TIERS` (gold / silver / bronze).
- :class:`Advertisement` and the capability models nodes send the manager.
- :func:`unmet` over a :class:`Route` (host -> switches -> controller -> container).

For the data path (host path selection, controller per-I/O checks):

- :class:`NegotiatedServices` (what a channel negotiated), :class:`Requirement`
  (what a policy needs, ``Requirement.from_policy(services)``), and
  :func:`path_satisfies` — a mask test, no validation per call.
- ``Requirement.service_class`` (0..63, for the CDB GROUP NUMBER field),
  :meth:`Requirement.from_service_class`, :func:`class_covers`.
"""

from difs.policy.capabilities import (
    Advertisement,
    ContainerAdvert,
    IntegrityCapability,
    IsolationCapability,
    NegotiatedServicesModel,
    NodeKind,
    PathAdvert,
    Portal,
    QosCapability,
    SecurityCapability,
    ServiceCapabilities,
)
from difs.policy.document import PolicyDocument, PolicyValidationError, format_errors, validate_policy
from difs.policy.fast import (
    NegotiatedServices,
    Requirement,
    class_covers,
    describe_flags,
    path_satisfies,
)
from difs.policy.satisfaction import NodeView, Route, Unmet, unmet
from difs.policy.services import (
    AuthMethod,
    IntegrityService,
    IsolationService,
    PIType,
    PolicyServices,
    QosService,
    SecurityService,
    parse_dscp,
)
from difs.policy.tiers import BRONZE, DEFAULT_TIERS, GOLD, SILVER


def service_class(services: PolicyServices | None) -> int:
    """The 6-bit service class (CDB GROUP NUMBER) of a policy's services."""
    return Requirement.from_policy(services).service_class


__all__ = [
    "Advertisement",
    "AuthMethod",
    "BRONZE",
    "ContainerAdvert",
    "DEFAULT_TIERS",
    "GOLD",
    "IntegrityCapability",
    "IntegrityService",
    "IsolationCapability",
    "IsolationService",
    "NegotiatedServices",
    "NegotiatedServicesModel",
    "NodeKind",
    "NodeView",
    "PIType",
    "PathAdvert",
    "PolicyDocument",
    "PolicyServices",
    "PolicyValidationError",
    "Portal",
    "QosCapability",
    "QosService",
    "Requirement",
    "Route",
    "SILVER",
    "SecurityCapability",
    "SecurityService",
    "ServiceCapabilities",
    "Unmet",
    "class_covers",
    "describe_flags",
    "format_errors",
    "parse_dscp",
    "path_satisfies",
    "service_class",
    "unmet",
    "validate_policy",
]
