"""The SCSI wire vocabulary both sides share (SAM-5 / SPC-4 / SBC-4), pure and allocation-lean.

Below ``scsi`` (the target's device), ``iscsi`` (which carries status and sense), ``integrity``
(PI check failures are sense codes), ``host`` (which builds CDBs and reads sense) and
``controller`` (which refuses with sense). Nothing here does I/O or keeps state: it is the
contract between the two processes at either end of a path.
"""
