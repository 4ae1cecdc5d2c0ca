"""What can go wrong with a VM, and what it becomes at the edge (the ``difs vm`` command).

::

    VmError                     exit 1, the message says why
    ├── ImageError              the guest cannot be built (a Debian package missing)
    ├── DefinitionError         a bad or unknown VM name, a bad definition
    ├── NotStarted              the VM was not started: its application could not be bound
    │                           or did not run on its host (the reason from the manager/host)
    └── BootError               QEMU could not be started or did not power off in time
"""

from __future__ import annotations


class VmError(Exception):
    """A VM operation failed; ``str()`` says why and what to do."""


class ImageError(VmError):
    pass


class DefinitionError(VmError):
    pass


class NotStarted(VmError):
    pass


class BootError(VmError):
    pass
