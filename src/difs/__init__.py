"""difs: per-application data-in-flight services over standard iSCSI.

Layout (see ../shared/design.md):

- ``difs.policy``     the services vocabulary (pure)
- ``difs.iscsi``      sans-I/O iSCSI (RFC 7143): PDUs, login, CHAP, digests, sequencing
- ``difs.scsi``       sans-I/O SCSI block device (SBC-4/SPC-4) over a block store
- ``difs.storage``    block stores on local disk (files, T10 PI with an intent log)
- ``difs.controller`` the iSCSI target process (asyncio adapter, volumes on disk)
- ``difs.host``       the host process (initiator, paths, path selection, NBD server)
- ``difs.nodelink``   a node's side of the link to the manager (HTTP client, exchange)
- ``difs.manager``    the management server (REST API, database, placement, compliance)
- ``difs.cli``        the ``difs`` command
"""

__version__ = "0.1.0"
