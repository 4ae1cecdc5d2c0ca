"""The protocol endpoint: the one target a manager-driven controller serves.

In manager mode the controller serves a single target, ``IQN_PREFIX:NAME``,
whose LUNs are the volumes the manager placed here. Access is per initiator:
each host initiator that logs in gets its own *view* (a
:class:`~difs.scsi.lun_map.ScsiTarget`) holding exactly the LUNs bound to it, so
REPORT LUNS, INQUIRY and I/O see nothing else — an unbound volume is in no view.
Volumes are exclusive: a volume sits in at most one view (one bound initiator).

Disk work (creating a volume's sparse file, rewriting its metadata) happens in
:meth:`prepare` — safe to run in a worker thread; changing the views happens in
:meth:`place`, on the event loop, between commands.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import Any

from difs.controller.config import policy_pi_type
from difs.controller.enforcement import Enforcement
from difs.controller.volumes import VolumeDirectory, VolumeMeta
from difs.iscsi.config import TargetConfig
from difs.sam.apptag import application_tag
from difs.scsi.device import LogicalUnit
from difs.scsi.store import BlockStore
from difs.scsi.lun_map import ScsiTarget
from difs.util.logs import log_event

log = logging.getLogger("difs.controller")


@dataclass
class EndpointVolume:
    meta: VolumeMeta
    lun: int
    lu: LogicalUnit
    store: BlockStore
    initiator: str | None = None  # the view it is in


class ProtocolEndpoint:
    def __init__(self, *, name: str, directory: VolumeDirectory,
                 enforcement: Enforcement | None = None) -> None:
        self.name = name
        self.directory = directory
        self.enforcement = enforcement
        self.views: dict[str, ScsiTarget] = {}
        self.volumes: dict[str, EndpointVolume] = {}

    def target_config(self) -> TargetConfig:
        # Anyone may log in; what an initiator can see is decided by its view.
        return TargetConfig(name=self.name, alias="difs protocol endpoint")

    def view_for(self, initiator_name: str) -> ScsiTarget:
        view = self.views.get(initiator_name)
        if view is None:
            view = self.views[initiator_name] = ScsiTarget()
        return view

    # -- volumes --------------------------------------------------------------------

    def prepare(self, *, name: str, size: int, policy: dict[str, Any] | None,
                policy_version: int, allowed_initiators: list[str],
                application: str | None = None, app_tag: int | None = None) -> VolumeMeta:
        """Make sure the volume exists on disk with its policy mirrored (worker thread).

        The volume expects its application's PI application tag (``app_tag`` if the
        manager mirrors one, else :func:`application_tag` of ``application``).

        A new volume whose policy requires protection information is created formatted
        with that PI type; an existing volume keeps its format (enforcement refuses its
        I/O with reason ``pi_format`` if the policy now asks for another)."""
        exists = self.directory.meta_path(name).exists()
        meta = self.directory.ensure(name, None if exists else size,
                                     pi_type=None if exists else policy_pi_type(policy))
        if meta.size != size:
            log_event(log, "volume resize pending", level=logging.WARNING, volume=name,
                      size=meta.size, wanted=size,
                      hint="online resize is not supported yet; restart the controller after "
                           "growing the file")
        extra = {**meta.extra, "policy_version": policy_version}
        if application:
            extra["application"] = application
        updated = replace(meta, policy=policy, allowed_initiators=list(allowed_initiators),
                          extra=extra)
        if app_tag is None and application:
            app_tag = application_tag(application)
        if app_tag is not None and 0 <= app_tag < 0xFFFF:
            updated = replace(updated, app_tag=app_tag)
        if updated != meta:
            self.directory.save(updated)
        return updated

    def place(self, meta: VolumeMeta, *, lun: int, initiator: str | None) -> None:
        """Serve ``meta`` at ``lun`` in ``initiator``'s view (None: in no view)."""
        vol = self.volumes.get(meta.name)
        if vol is None:
            lu, store = self.directory.open_unit(meta, device_name=f"{self.name},lun,{lun}")
            vol = self.volumes[meta.name] = EndpointVolume(meta, lun, lu, store)
            log_event(log, "volume served", volume=meta.name, lun=lun, endpoint=self.name,
                      pi_type=meta.pi_type or "none")
        vol.meta = meta
        if self.enforcement is not None:
            self.enforcement.register(vol.lu, meta)
        if vol.initiator == initiator and vol.lun == lun:
            return
        if vol.initiator is not None:
            self.views[vol.initiator].remove_lun(vol.lun)
            log_event(log, "volume unmasked from", volume=meta.name, initiator=vol.initiator)
        vol.initiator, vol.lun = initiator, lun
        if initiator is not None:
            view = self.view_for(initiator)
            if lun in view.luns:
                raise ValueError(f"LUN {lun} of {initiator}'s view is already taken")
            view.add_lun(lun, vol.lu)
            log_event(log, "volume visible to", volume=meta.name, lun=lun, initiator=initiator)

    def retire(self, name: str) -> None:
        """Stop serving ``name`` (its data stays on disk)."""
        vol = self.volumes.pop(name)
        if vol.initiator is not None:
            self.views[vol.initiator].remove_lun(vol.lun)
        if self.enforcement is not None:
            self.enforcement.unregister(vol.lu)
        vol.store.flush()
        vol.store.close()
        log_event(log, "volume retired", volume=name)

    def close(self) -> None:
        for name in list(self.volumes):
            self.retire(name)
