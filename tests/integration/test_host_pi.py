"""T10 PI end to end through a real host and a real controller.

An application whose policy asks for protection information gets it from the host: PI
generated on write, sent with WRPROTECT=001b, verified on read before the application sees a
byte. A volume that cannot store PI is refused when the application starts, with the volume
named.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import controller, free_port, start_difs

pytestmark = pytest.mark.integration


def policy_file(tmp_path: Path, name: str, **integrity) -> str:
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps({"name": name, "services": {"integrity": integrity}}))
    return str(path)


def test_pi_policy_on_a_volume_without_pi_refuses_to_start(tmp_path: Path) -> None:
    pi1 = policy_file(tmp_path, "pi1", protection_information=1)
    with controller(tmp_path / "ctl", "--volume", "plain:8M") as ctl:
        host = start_difs("host", "--nbd", f"127.0.0.1:{free_port()}",
                          "--app", f"db=iscsi://{ctl.host}:{ctl.port}/{ctl.iqn('plain')}/0",
                          "--policy", f"db={pi1}", "--channels", "plain", "--path-wait", "3")
        try:
            rc = host.popen.wait(30)
        finally:
            host.stop()
        err = host.log_text()
        assert rc != 0, err
        assert f"volume {ctl.iqn('plain')} LUN 0 is not formatted with protection " \
               "information" in err, err
        assert "db's policy requires T10 PI type 1" in err
        assert not host.lines  # no NBD export was offered
