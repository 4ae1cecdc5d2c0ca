"""Storage containers: list, declare, resize, delete."""

from __future__ import annotations

from fastapi import APIRouter

from difs.manager.api.deps import AdminDep, NowDep, SessionDep
from difs.manager.api.responses import problems
from difs.manager.schemas import ContainerCreate, ContainerPublic, ContainerUpdate, Name
from difs.manager.services import containers

router = APIRouter(prefix="/containers", tags=["containers"])


@router.get("", response_model=list[ContainerPublic], responses=problems(403))
def list_containers(session: SessionDep, _: AdminDep) -> list[ContainerPublic]:
    return containers.list_containers(session=session)


@router.post("", status_code=201, response_model=ContainerPublic, responses=problems(403, 404, 409))
def create_container(data: ContainerCreate, session: SessionDep, now: NowDep, _: AdminDep) -> ContainerPublic:
    return containers.create(session=session, now=now, data=data)


@router.get("/{controller}/{name}", response_model=ContainerPublic, responses=problems(403, 404))
def get_container(controller: Name, name: Name, session: SessionDep, _: AdminDep) -> ContainerPublic:
    return containers.get(session=session, controller=controller, name=name)


@router.patch("/{controller}/{name}", response_model=ContainerPublic, responses=problems(403, 404, 409))
def resize_container(
    controller: Name, name: Name, data: ContainerUpdate, session: SessionDep, now: NowDep, _: AdminDep
) -> ContainerPublic:
    return containers.resize(session=session, now=now, controller=controller, name=name, data=data)


@router.delete("/{controller}/{name}", status_code=204, responses=problems(403, 404, 409))
def delete_container(controller: Name, name: Name, session: SessionDep, now: NowDep, _: AdminDep) -> None:
    containers.remove(session=session, now=now, controller=controller, name=name)
