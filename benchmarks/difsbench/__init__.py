"""The pieces of the benchmark runner (``benchmarks/run.py``).

* :mod:`.procs` — ports, processes, CPU time from ``/proc``, the machine description;
* :mod:`.targets` — what is measured: tgt, difs controllers, difs hosts, qemu-nbd bridges;
* :mod:`.workloads` — the real clients: ``iscsi-perf``, ``qemu-img bench``, ``fio``;
* :mod:`.suite` — running workloads against endpoints with progress, collecting figures;
* :mod:`.perapp` — the per-application experiment (two applications, two host set-ups);
* :mod:`.profiling` — py-spy profiles of the controller and host under load;
* :mod:`.report` — tables (Markdown), JSON, the PNG chart, the targets of issue 7.

Nothing here imports ``difs``: the runner drives the ``difs`` command as a user would.
"""
