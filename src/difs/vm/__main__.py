"""``python -m difs.vm``: a VM's monitor process (started detached by ``difs vm start``)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from difs.util.logs import setup_logging
from difs.vm.lifecycle import monitor
from difs.vm.store import Store


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m difs.vm")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--manager", required=True)
    parser.add_argument("--workload", required=True)
    parser.add_argument("--timeout", type=float, default=0.0)
    parser.add_argument("name")
    args = parser.parse_args()
    setup_logging(level="info")
    store = Store(args.data_dir)
    return monitor(store, store.get(args.name), manager=args.manager,
                   token=os.environ.pop("DIFS_TOKEN", None), workload=args.workload,
                   timeout=args.timeout)


if __name__ == "__main__":
    raise SystemExit(main())
