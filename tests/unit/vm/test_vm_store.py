"""Whether a VM's monitor still runs, as ``difs vm`` judges it from /proc."""


def test_an_ended_monitor_not_yet_reaped_is_not_alive():
    """A monitor that ended is a zombie until its parent reaps it (or forever when nobody reaps
    orphans, as in a container): it must not keep its VM "running"."""
    import subprocess
    import sys
    import time

    from difs.vm import lifecycle

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.2)"])
    state = {"monitor_pid": child.pid, "monitor_start": lifecycle._start_time(child.pid)}
    assert state["monitor_start"] is not None and lifecycle.alive(state)
    deadline = time.monotonic() + 10
    while lifecycle.alive(state) and time.monotonic() < deadline:  # ends, not reaped: a zombie
        time.sleep(0.05)
    assert not lifecycle.alive(state)
    assert child.poll() is not None  # reaped only now
