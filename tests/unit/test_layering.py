"""The package boundaries, checked on the source: which package may import which.

Every ``import`` in src/difs counts, also inside functions and under ``TYPE_CHECKING``: a
lazy import is still an arrow between packages.  The rules:

* only HTTP connects a node to the manager: nothing a controller or host process runs
  imports :mod:`difs.manager` (their side of the link is :mod:`difs.nodelink`);
* controller and host are separate processes: neither imports the other, nor does what they
  share (``nodelink``, ``storage``) import them;
* the cores (``iscsi``, ``scsi``, ``sam``, ``integrity``, ``policy``, ``nbd``) import none of
  the packages built on them, and are sans-I/O: no asyncio, sockets, clocks or threads, no
  logging configuration.  Adapters that live inside a core package are exempt by name, each
  with its reason (:data:`ADAPTERS`, :data:`ALLOWED`);
* ``vm`` runs VMs as a process of its own, like ``cli``: it reaches the manager over HTTP
  (``nodelink.client``) and imports no other process's package;
* the package graph has no cycle (``__main__`` entry points aside), nor has the CLI.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

CORES = ("iscsi", "scsi", "sam", "integrity", "policy", "nbd")
#: the packages a controller or host process runs
NODE_SIDE = (*CORES, "controller", "host", "nodelink", "storage", "util")
#: the packages built on the cores
ABOVE_CORES = ("difs.controller", "difs.host", "difs.storage", "difs.nodelink", "difs.manager",
               "difs.cli", "difs.allinone", "difs.vm")

#: name: (packages, forbidden import prefixes, why)
RULES = {
    "nodes-reach-the-manager-over-http": (
        NODE_SIDE, ("difs.manager",), "only HTTP connects a node to the manager (difs.nodelink)"),
    "controller-not-host": (
        ("controller",), ("difs.host",), "controller and host are separate processes"),
    "host-not-controller": (
        ("host",), ("difs.controller",), "controller and host are separate processes"),
    "cores-not-above": (CORES, ABOVE_CORES, "a core knows nothing of what is built on it"),
    "sam-is-the-bottom": (
        ("sam",), ("difs.iscsi", "difs.scsi", "difs.integrity", "difs.policy", "difs.nbd",
                   "difs.storage", "difs.util"),
        "the SCSI wire vocabulary sits below every package that speaks it"),
    "shared-not-processes": (
        ("nodelink", "storage"), ("difs.controller", "difs.host", "difs.cli", "difs.allinone",
                                  "difs.vm"),
        "a package the processes share knows nothing of them"),
    "vm-is-a-process": (
        ("vm",), ("difs.controller", "difs.host", "difs.manager", "difs.cli", "difs.allinone"),
        "a VM reaches the manager over HTTP (difs.nodelink) and its disk over NBD"),
}

#: what a sans-I/O core must not use: the adapter's business
IO_MODULES = ("asyncio", "uvloop", "socket", "selectors", "time", "threading", "concurrent",
              "multiprocessing", "logging.config", "logging.handlers")
LOGGING_CONFIG = ("basicConfig", "dictConfig", "fileConfig")

#: modules inside a core package that are adapters (or tools around one), with the reason
ADAPTERS = {
    "difs.nbd.server": "the asyncio NBD server: the adapter around the core (nbd.connection)",
    "difs.nbd.backend": "the backends the NBD server calls: local I/O in worker threads",
    "difs.nbd.client": "a blocking NBD client over a socket, for diagnostics and tests",
    "difs.nbd.testing": "runs the NBD server on its own event loop in a thread, for tests",
    "difs.nbd.__main__": "`python -m difs.nbd`: the standalone server process",
}
#: core modules allowed one I/O module, with the reason
ALLOWED = {
    "difs.scsi.device": (("threading",), "LogicalUnit.rmw_lock keeps read-modify-write "
                         "commands atomic when the controller runs commands in worker threads"),
}


def _sources() -> tuple[dict[str, str], set[str]]:
    """(module -> source text, the modules that are packages)."""
    sources, packages = {}, set()
    for path in sorted((SRC / "difs").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
            packages.add(".".join(parts))
        sources[".".join(parts)] = path.read_text()
    return sources, packages


SOURCES, PACKAGES = _sources()


def _imports(module: str, text: str) -> list[tuple[int, str]]:
    """(line, dotted name) of every import; ``from a import b`` gives ``a`` and ``a.b``."""
    return _parsed_imports(module, text, module in PACKAGES)


@functools.cache
def _parsed_imports(module: str, text: str, is_package: bool) -> list[tuple[int, str]]:
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(text, module)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: package.count(".") + 2 - node.level]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return found


def _within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else ""


def violations(packages: tuple[str, ...], forbidden: tuple[str, ...],
               sources: dict[str, str] = SOURCES) -> list[str]:
    return sorted({f"{module}:{line} imports {name}"
                   for module, text in sources.items() if _package(module) in packages
                   for line, name in _imports(module, text) if _within(name, forbidden)})


def io_violations(sources: dict[str, str] = SOURCES) -> list[str]:
    found = []
    for module, text in sources.items():
        if _package(module) not in CORES or module in ADAPTERS:
            continue
        allowed = ALLOWED[module][0] if module in ALLOWED else ()
        forbidden = tuple(name for name in IO_MODULES if name not in allowed)
        found += [f"{module}:{line} imports {name}"
                  for line, name in _imports(module, text) if _within(name, forbidden)]
        found += [f"{module}:{node.lineno} configures logging"
                  for node in ast.walk(ast.parse(text)) if _configures_logging(node)]
    return sorted(set(found))


def _configures_logging(node: ast.AST) -> bool:
    return (isinstance(node, ast.Attribute) and node.attr in LOGGING_CONFIG
            and isinstance(node.value, ast.Name) and node.value.id == "logging")


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node, [])):
            return found
    return None


def _graph(key) -> dict[str, set[str]]:
    """Arrows between the keys of modules (``key(module)``; None: leave the module out)."""
    graph: dict[str, set[str]] = {}
    for module, text in SOURCES.items():
        src = key(module)
        if src is None:
            continue
        for _, name in _imports(module, text):
            dst = key(name) if name in SOURCES else None
            if dst is not None and dst != src:
                graph.setdefault(src, set()).add(dst)
    return graph


@pytest.mark.parametrize("rule", RULES)
def test_import_rules(rule: str) -> None:
    packages, forbidden, why = RULES[rule]
    found = violations(packages, forbidden)
    assert not found, "\n".join([why + ":", *found])


def test_cores_are_sans_io() -> None:
    found = io_violations()
    assert not found, "\n".join(["a core does no I/O, the adapter around it does:", *found])


def test_adapters_named_here_exist() -> None:
    assert set(ADAPTERS) | set(ALLOWED) <= set(SOURCES), "an exempted module moved: update the test"


def test_package_graph_has_no_cycle() -> None:
    def package(module: str) -> str | None:
        return None if module.endswith("__main__") or not module.count(".") else _package(module)

    assert _cycle(_graph(package)) is None


def test_cli_modules_have_no_cycle() -> None:
    assert _cycle(_graph(lambda m: m if m.startswith("difs.cli.") else None)) is None


def test_the_rules_catch_a_forbidden_import() -> None:
    """The checks are not vacuous: each finds a bad line in a module of the package it rules."""
    sources = {
        "difs.host.extra": "from difs.manager.schemas import Advertisement\n",
        "difs.controller.extra": "def f():\n    import difs.host.agent\n",
        "difs.scsi.extra": "from ..storage import pistore\n",
        "difs.iscsi.extra": "import asyncio\n",
        "difs.sam.extra": "import logging\nlogging.basicConfig()\n",
        "difs.scsi.device": "import threading\nimport time\n",  # allowed threading only
    }
    assert violations(NODE_SIDE, ("difs.manager",), sources) == [
        "difs.host.extra:1 imports difs.manager.schemas",
        "difs.host.extra:1 imports difs.manager.schemas.Advertisement"]
    assert violations(("controller",), ("difs.host",), sources) == [
        "difs.controller.extra:2 imports difs.host.agent"]
    assert "difs.scsi.extra:1 imports difs.storage" in violations(CORES, ABOVE_CORES, sources)
    assert io_violations(sources) == ["difs.iscsi.extra:1 imports asyncio",
                                      "difs.sam.extra:2 configures logging",
                                      "difs.scsi.device:2 imports time"]
