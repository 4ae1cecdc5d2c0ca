"""Volumes: list, create (placed), resize (grow), delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from difs.manager.api.deps import AdminDep, FreshDep, NowDep, SessionDep
from difs.manager.api.responses import problems
from difs.manager.schemas import Name, VolumeCreate, VolumePublic, VolumeResize
from difs.manager.services import volumes

router = APIRouter(prefix="/volumes", tags=["volumes"])

VolumeRef = Annotated[str, Path(min_length=1, max_length=63, description="volume id or name")]


@router.get("", response_model=list[VolumePublic], responses=problems(403))
def list_volumes(session: SessionDep, _: AdminDep, application: Annotated[Name | None, Query()] = None) -> list[VolumePublic]:
    return volumes.list_volumes(session=session, application=application)


@router.post("", status_code=201, response_model=VolumePublic, responses=problems(403, 404, 409))
def create_volume(data: VolumeCreate, session: SessionDep, now: NowDep, _: AdminDep, fresh: FreshDep) -> VolumePublic:
    return volumes.create(session=session, now=now, data=data, fresh_seconds=fresh)


@router.get("/{ref}", response_model=VolumePublic, responses=problems(403, 404))
def get_volume(ref: VolumeRef, session: SessionDep, _: AdminDep) -> VolumePublic:
    return volumes.get(session=session, ref=ref)


@router.patch("/{ref}", response_model=VolumePublic, responses=problems(403, 404, 409))
def resize_volume(ref: VolumeRef, data: VolumeResize, session: SessionDep, now: NowDep, _: AdminDep) -> VolumePublic:
    return volumes.resize(session=session, now=now, ref=ref, data=data)


@router.delete("/{ref}", status_code=204, responses=problems(403, 404, 409))
def delete_volume(ref: VolumeRef, session: SessionDep, now: NowDep, _: AdminDep, fresh: FreshDep) -> None:
    volumes.remove(session=session, now=now, ref=ref, fresh_seconds=fresh)
