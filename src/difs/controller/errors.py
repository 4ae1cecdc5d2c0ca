"""The controller's errors, each with what it becomes at the edge.

Exception tree::

    Exception
     ├── ConfigError        a configuration (options, TOML file, a stored policy) that cannot be
     │                      used: ``difs controller`` exits 2 naming where and why; a volume
     │                      placed by the manager with one is refused, the others keep serving
     ├── VolumeError        a volume that cannot be created or opened (bad name, size, format,
     │                      metadata): exit 2 at start, a refused placement at run time
     ├── StateError         a persisted manager-mode state (``controller/state.py``) that is
     │                      torn, edited or not this controller's: logged, refused as a whole
     │                      (nothing of it is served), the controller waits for the manager
     └── difs.scsi.sense.ScsiError
                            everything an I/O can fail with, carrying its sense key / ASC /
                            ASCQ; it never leaves the SCSI core as an exception, it becomes a
                            CHECK CONDITION (policy refusals: DATA PROTECT 74h/71h, see
                            ``controller/enforcement.py``)

A peer's fault on the wire (malformed PDU, bad login) is the iSCSI core's business
(``difs.iscsi.errors``): it ends at most that one connection.
"""

from __future__ import annotations


class ConfigError(Exception):
    """A configuration that cannot be used; the message says where and why."""


class VolumeError(Exception):
    """A volume request that cannot be honoured; the message says what to do."""


class StateError(Exception):
    """A persisted state that cannot be trusted; the message says where and why."""
