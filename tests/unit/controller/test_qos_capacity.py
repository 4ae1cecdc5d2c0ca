"""The controller's QoS capacity: given by option, or calibrated once on the data directory
(saved, reused at later starts), and advertised to the manager."""

from __future__ import annotations

import json
import logging
import time

import pytest

from difs.controller import capacity as cap
from difs.controller.config import ControllerConfig
from difs.controller.manager_link import ControllerManagerLink
from difs.controller.qos import Capacity
from difs.controller.server import Controller
from difs.policy.capabilities import QosCapability


def test_options_need_no_calibration(tmp_path, monkeypatch):
    monkeypatch.setattr(cap, "calibrate", lambda *a, **k: pytest.fail("calibrated"))
    assert cap.resolve_capacity(tmp_path, iops=5000, bytes_per_second=10**8) == (
        Capacity(5000, 10**8), "option")
    assert not (tmp_path / cap.CAPACITY_FILE).exists()


def test_calibration_runs_once_and_is_saved(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="difs.controller")
    start = time.monotonic()
    first, source = cap.resolve_capacity(tmp_path)
    assert time.monotonic() - start <= 2.0 + 0.5  # a short run (the brief: at most 2 s)
    assert source == "calibrated" and first.iops > 0 and first.bytes_per_second > 0
    phases = [r.difs_fields["phase"] for r in caplog.records if r.getMessage() == "qos calibration"]
    assert phases == ["1 MiB sequential write", "1 MiB sequential read", "4 KiB random read",
                      "4 KiB random write"]
    saved = json.loads((tmp_path / cap.CAPACITY_FILE).read_text())
    assert (saved["iops"], saved["bytes_per_second"]) == (first.iops, first.bytes_per_second)
    assert not (tmp_path / cap.SCRATCH_FILE).exists()
    again, source = cap.resolve_capacity(tmp_path)
    assert (again, source) == (first, "saved")
    # one half given: the other comes from the saved calibration
    assert cap.resolve_capacity(tmp_path, iops=7) == (Capacity(7, first.bytes_per_second),
                                                      "option+saved")


def test_unreadable_capacity_file_is_measured_again(tmp_path):
    (tmp_path / cap.CAPACITY_FILE).write_text("{not json")
    capacity, source = cap.resolve_capacity(tmp_path)
    assert source == "calibrated" and capacity.iops > 0


def test_advertisement_carries_the_qos_capability(tmp_path):
    controller = Controller(ControllerConfig(name="c1", data_dir=tmp_path))
    controller.enable_endpoint()
    link = ControllerManagerLink(controller, client=None, node="c1")
    qos = link.advertisement().services.qos
    assert qos == QosCapability(limit=True, weight=True)  # no capacity: no reservations
    controller.qos.set_capacity(Capacity(12000, 400 << 20))
    qos = link.advertisement().services.qos
    assert (qos.reservation, qos.limit, qos.weight) == (True, True, True)
    assert (qos.max_iops, qos.max_bytes_per_second) == (12000, 400 << 20)
