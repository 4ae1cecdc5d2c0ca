"""A small synchronous client of the manager's API, for the CLI and for nodes.

Hosts and controllers use it to advertise, read their volumes and bindings and
report statistics; the CLI uses it for everything else::

    from difs.nodelink.client import ManagerClient
    with ManagerClient("http://127.0.0.1:8600", token=node_token) as m:
        m.advertise("ctl1", advertisement)          # an Advertisement or a dict
        for vol in m.controller_volumes("ctl1"):    # list of dicts (ControllerVolume)
            ...

Errors: :class:`ManagerUnreachable` (no connection: the manager is not
running or the URL is wrong) and :class:`ManagerError` (the manager answered
with a problem document; ``.status``, ``.problem``). A 503 (e.g. the manager's
database is down) is :class:`ManagerUnavailable`, both at once: for a node the
same as unreachable — keep serving and retry.
"""

from __future__ import annotations

from typing import Any

import httpx
from pydantic import BaseModel

DEFAULT_URL = "http://127.0.0.1:8600"


class ManagerUnreachable(Exception):
    def __init__(self, url: str, cause: Exception) -> None:
        super().__init__(f"cannot reach the manager at {url}: {cause.__class__.__name__}: {cause}")
        self.url = url


class ManagerError(Exception):
    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        super().__init__(f"{status} {problem.get('title', '')}: {problem.get('detail', '')}")


class ManagerUnavailable(ManagerUnreachable, ManagerError):
    """The manager answered 503 (its database is down, or it is overloaded): retry later.

    Both kinds at once: a node's link catches it as unreachable (keeps serving, binds nothing
    anew, tears nothing down); code that handles any refusal sees a ManagerError."""

    def __init__(self, url: str, problem: dict[str, Any]) -> None:
        Exception.__init__(self, f"the manager at {url} is unavailable: {problem.get('detail') or problem.get('title', '')}")
        self.url = url
        self.status = 503
        self.problem = problem


def _body(obj: Any) -> Any:
    return obj.model_dump(mode="json", exclude_none=True) if isinstance(obj, BaseModel) else obj


class ManagerClient:
    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url + "/api/v1", headers=headers, timeout=timeout)

    def __enter__(self) -> ManagerClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                headers: dict[str, str] | None = None) -> Any:
        try:
            r = self._http.request(method, path, json=_body(json), params=params, headers=headers)
        except httpx.TransportError as exc:
            raise ManagerUnreachable(self.url, exc) from None
        if r.status_code >= 400:
            try:
                problem = r.json()
            except ValueError:
                problem = {"title": r.reason_phrase, "detail": r.text[:500]}
            problem = problem if isinstance(problem, dict) else {"detail": str(problem)}
            if r.status_code == 503:
                raise ManagerUnavailable(self.url, problem)
            raise ManagerError(r.status_code, problem)
        if not r.content:
            return None
        return r.json()

    # --- for nodes ---------------------------------------------------------------------------
    def advertise(self, node: str, advertisement: Any) -> dict[str, Any]:
        return self.request("PUT", f"/nodes/{node}/advertisement", json=advertisement)

    def controller_volumes(self, controller: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/controllers/{controller}/volumes")

    def controller_containers(self, controller: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/controllers/{controller}/containers")

    def host_bindings(self, host: str) -> list[dict[str, Any]]:
        return self.request("GET", f"/hosts/{host}/bindings")

    def bind(self, application: str, *, initiator_iqn: str, host: str | None = None) -> dict[str, Any]:
        body = {"initiator_iqn": initiator_iqn, **({"host": host} if host else {})}
        return self.request("POST", f"/apps/{application}/binding", json=body)

    def unbind(self, application: str) -> None:
        self.request("DELETE", f"/apps/{application}/binding")

    def report_stats(self, host: str, report: Any) -> dict[str, Any]:
        return self.request("POST", f"/hosts/{host}/stats", json=report)

    def report_host_evidence(self, host: str, report: Any) -> dict[str, Any]:
        """A :class:`difs.policy.evidence.HostEvidenceReport` for the last window."""
        return self.request("PUT", f"/hosts/{host}/evidence", json=report)

    def report_controller_evidence(self, controller: str, report: Any) -> dict[str, Any]:
        """A :class:`difs.policy.evidence.ControllerEvidenceReport` for the last window."""
        return self.request("PUT", f"/controllers/{controller}/evidence", json=report)

    def get_difs(self, application: str) -> dict[str, Any]:
        return self.request("GET", f"/apps/{application}/policy")
