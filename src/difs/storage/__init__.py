"""Block stores on local disk: the I/O that the sans-I/O SCSI core (:mod:`difs.scsi`) must
not do.  Each implements the core's :class:`~difs.scsi.store.BlockStore` interface.

=============  ===================================================================
module         what it gives
=============  ===================================================================
``filestore``  :class:`FileStore`: a file or block device through its descriptor
               (``pread``/``pwrite``/``fdatasync``, hole punching, allocation map,
               a journal for WRITE ATOMIC)
``pistore``    :class:`PiStore`: data + T10 PI + intent log, crash-consistent (a
               :class:`~difs.scsi.store.PiBlockStore`); ``PiStore.in_memory`` for tests
=============  ===================================================================

Calls block: the controller runs them where blocking is acceptable.
"""
