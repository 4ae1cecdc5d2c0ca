"""The host: iSCSI initiator with several paths per controller, path selection, NBD server."""
