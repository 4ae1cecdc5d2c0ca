"""The shared plumbing of the user commands that talk to the manager.

:func:`client` opens a :class:`~difs.nodelink.client.ManagerClient` whose failures become
one clear message, a hint and an exit code (2: the manager is unreachable; 1: it refused);
:func:`fail` is that exit for the commands' own checks.  :func:`emit` prints either JSON
(``--json``, for scripts) or the command's rendering, with :func:`table` and
:func:`styled` states.  :func:`parse_size` / :func:`human_size` convert sizes.

The option types the commands share are in :mod:`difs.cli.options`.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from difs.manager.config import default_data_dir
from difs.nodelink.client import DEFAULT_URL, ManagerClient, ManagerError, ManagerUnreachable

console = Console()
err_console = Console(stderr=True)

_HINTS = {
    401: "give the admin token with --token or DIFS_TOKEN (the manager keeps it in <data dir>/admin-token)",
    403: "this needs another token: the admin token, or the token of the node concerned",
    404: "check the name (list them with the matching `list` command)",
    412: "someone changed it meanwhile: read it again and retry",
}


def fail(message: str, hint: str | None = None, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False)
    if hint:
        err_console.print(f"[dim]hint:[/] {hint}", highlight=False)
    raise typer.Exit(code)


def local_admin_token() -> str | None:
    path = default_data_dir() / "admin-token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


@contextmanager
def client(manager: str, token: str | None) -> Iterator[ManagerClient]:
    """A client whose errors become one clear message and an exit code."""
    c = ManagerClient(manager or DEFAULT_URL, token=token or local_admin_token())
    try:
        yield c
    except ManagerUnreachable as exc:
        fail(str(exc), "is the manager running? start it with `difs manager` (or point --manager / DIFS_MANAGER at it)", 2)
    except ManagerError as exc:
        p = exc.problem
        lines = [f"{p.get('title', 'error')} ({exc.status}): {p.get('detail', '')}"]
        for e in p.get("errors") or []:
            lines.append(f"  - {e}")
        detail = str(p.get("detail", ""))
        for r in p.get("reasons") or []:  # every reason a change was refused
            lines.append(f"  - {r}")
        for u in [] if p.get("reasons") else p.get("unmet") or []:
            lines.append(f"  - unmet {u.get('service')}: {u.get('reason')}")
        for r in p.get("rejected") or []:
            lines.append(f"  - {r.get('kind')} {r.get('candidate')}: {'; '.join(r.get('reasons', []))}")
        if p.get("unmet") or p.get("rejected") or p.get("reasons"):  # the detail has them inline
            lines[0] = f"{p.get('title', 'error')} ({exc.status}): {detail.split(':')[0]}:"
        hint = _HINTS.get(exc.status)
        if p.get("type", "").endswith("infeasible"):
            hint = "choose a policy the fleet can meet, or add capable nodes (see `difs node list`)"
        fail("\n".join(lines), hint)
    finally:
        c.close()


def emit(data: Any, as_json: bool, render: Callable[[Any], None]) -> None:
    if as_json:
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=True) + "\n")
    else:
        render(data)


def table(title: str | None, columns: list[str], rows: list[list[Any]]) -> None:
    t = Table(title=title, title_justify="left")
    for c in columns:
        t.add_column(c)
    for r in rows:
        t.add_row(*["" if v is None else str(v) for v in r])
    console.print(t)


STATE_STYLE = {"compliant": "green", "non_compliant": "bold red", "unknown": "yellow",
               "alive": "green", "expired": "bold red", "registered": "yellow"}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{state}[/]" if style else state


_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str) -> int:
    """``4096``, ``512M``, ``10G``, ``1GiB``, ``2T`` -> bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*", text.lower())
    if m is None:
        raise typer.BadParameter(f"{text!r} is not a size: use e.g. 4096, 512M, 10G, 1T")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def human_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)
