"""Path selection plugins: which satisfying path carries this I/O.

A selector is a small class with one keyword-only hook,
``select(*, requirement, paths) -> Path | None``, registered by name
(``register_path_selector("round-robin", RoundRobin)``), like aioquic's
congestion controls. The contract every selector keeps, and that
:func:`choose` enforces: the answer is an *available* path that *satisfies*
the requirement, or ``None`` — never a path that does not satisfy it. With
``None`` the I/O waits for a path (bounded); it is never downgraded.

Both selectors prefer a path that is not *degraded* (it corrupted data often of late, see
:class:`~difs.host.recovery.ResendBudget`) among the satisfying ones; a degraded path still
carries the I/O when no other satisfying path is available — a weaker one never does.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from difs.host.paths import Path
from difs.policy.fast import Requirement


class PathSelector(ABC):
    name: str = ""

    @abstractmethod
    def select(self, *, requirement: Requirement, paths: Sequence[Path]) -> Path | None:
        """Return an available path satisfying ``requirement``, or None."""


def extra_services(path: Path, requirement: Requirement) -> int:
    """How many services ``path`` applies beyond what ``requirement`` asks for.

    Those cost CPU and bandwidth for nothing: an application that needs no
    digests should not pay for them because a digest channel happens to be idle.
    """
    return (path.negotiated.flags & ~requirement.flags).bit_count()


class LeastOutstanding(PathSelector):
    """Among the satisfying paths (those not degraded first) that add the fewest
    unrequested services, the one with the fewest I/Os in flight; ties go round-robin."""

    name = "least-outstanding"

    def __init__(self) -> None:
        self._turn = 0

    def select(self, *, requirement: Requirement, paths: Sequence[Path]) -> Path | None:
        best: Path | None = None
        best_key = (False, 0, 0)
        n = len(paths)
        self._turn += 1
        for i in range(n):
            path = paths[(self._turn + i) % n]
            if path.is_available() and path.satisfies(requirement):
                key = (path.degraded, extra_services(path, requirement), path.outstanding)
                if best is None or key < best_key:
                    best, best_key = path, key
        return best


class RoundRobin(PathSelector):
    """Each satisfying path in turn, whatever it costs (degraded ones only when no other
    satisfies)."""

    name = "round-robin"

    def __init__(self) -> None:
        self._turn = 0

    def select(self, *, requirement: Requirement, paths: Sequence[Path]) -> Path | None:
        n = len(paths)
        fallback: Path | None = None
        for i in range(n):
            path = paths[(self._turn + i) % n]
            if path.is_available() and path.satisfies(requirement):
                if path.degraded:
                    fallback = fallback or path
                    continue
                self._turn = (self._turn + i + 1) % n
                return path
        return fallback


_REGISTRY: dict[str, type[PathSelector]] = {}


def register_path_selector(name: str, cls: type[PathSelector]) -> None:
    if name in _REGISTRY:
        raise ValueError(f"a path selector named {name!r} is already registered")
    _REGISTRY[name] = cls


def path_selector(name: str) -> PathSelector:
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValueError(f"unknown path selector {name!r}; known: {known}") from None


def path_selectors() -> list[str]:
    return sorted(_REGISTRY)


def choose(selector: PathSelector, *, requirement: Requirement, paths: Sequence[Path]) -> Path | None:
    """Ask ``selector``, and refuse any answer that breaks the contract."""
    path = selector.select(requirement=requirement, paths=paths)
    if path is not None and not (path.is_available() and path.satisfies(requirement)):
        raise AssertionError(
            f"path selector {selector.name!r} chose {path!r}, which does not satisfy {requirement!r}")
    return path


register_path_selector(LeastOutstanding.name, LeastOutstanding)
register_path_selector(RoundRobin.name, RoundRobin)
