"""The soak: a difs cluster of real processes on loopback under I/O and faults for minutes.

``benchmarks/soak.py`` is the command; see benchmarks/README.md ("The soak").

* :mod:`.pattern` — what each 512-byte sector carries, and the model that tells, sector by
  sector, current from stale from corrupt from lost (pure; unit-tested);
* :mod:`.cluster` — the processes (manager, controllers, hosts) and their supervisor, the
  fault proxies and the manager relay that sends one host's paths through them;
* :mod:`.driver` — the applications: one thread and one NBD connection each;
* :mod:`.faultplan` — the faults, in rotation, and what each one measures;
* :mod:`.report` — the stdout table, results.json and results.md.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# the fault proxy is the tests' own (tests/proxy.py, tests/faults.py): imported, not copied
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))
