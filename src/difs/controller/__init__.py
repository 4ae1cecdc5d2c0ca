"""The storage controller: an iSCSI target serving volumes from local disk."""
