"""Policy documents: a named, versioned set of required services, and their validation.

A :class:`PolicyDocument` is what users write and what the manager stores in its
catalogue (tiers are policy documents too). Its ``version`` starts at 1 and
:meth:`PolicyDocument.revise` returns the next version on *every* update, even
one that leaves the services unchanged, so that anyone holding a copy can tell
it is stale.

:func:`validate_policy` turns untrusted input (a dict from JSON or a file) into
a document or raises :class:`PolicyValidationError`, whose ``problems`` are
plain sentences naming the offending field, e.g.
``services.qos.reservation_iops: reservation_iops (900) is above limit_iops (500)``.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from difs.policy.fast import Requirement
from difs.policy.services import NAME_PATTERN, PolicyServices

__all__ = ["PolicyDocument", "PolicyValidationError", "validate_policy", "format_errors"]


class PolicyDocument(BaseModel):
    """A named policy: the services an application needs, with a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NAME_PATTERN, description="1-63 chars: a-z 0-9 . _ -")
    description: str = Field("", max_length=500)
    services: PolicyServices = Field(default_factory=PolicyServices)
    version: int = Field(1, ge=1)

    @property
    def requirement(self) -> Requirement:
        return Requirement.from_policy(self.services)

    @property
    def service_class(self) -> int:
        return self.requirement.service_class

    def revise(
        self, *, services: PolicyServices | None = None, description: str | None = None
    ) -> PolicyDocument:
        """The next version of this document (version + 1, whatever changed)."""
        return self.model_copy(
            update={
                "services": self.services if services is None else services,
                "description": self.description if description is None else description,
                "version": self.version + 1,
            }
        )


class PolicyValidationError(ValueError):
    """A policy document that does not validate; ``problems`` lists each fault in words."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid policy: " + "; ".join(problems))


def format_errors(exc: ValidationError, *, prefix: str = "") -> list[str]:
    """One readable sentence per pydantic error: ``field.path: message``."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        msg = str(err.get("msg", "invalid"))
        for lead in ("Value error, ", "Assertion failed, "):
            if msg.startswith(lead):
                msg = msg[len(lead) :]
        if err.get("type") == "extra_forbidden":
            msg = f"unknown field {str(err['loc'][-1])!r}"
        where = ".".join(p for p in (prefix, loc) if p)
        out.append(f"{where}: {msg}" if where else msg)
    return out


def validate_policy(data: Any) -> PolicyDocument:
    """Validate untrusted input into a :class:`PolicyDocument` (raises PolicyValidationError)."""
    try:
        return PolicyDocument.model_validate(data)
    except ValidationError as exc:
        raise PolicyValidationError(format_errors(exc)) from None
