"""Sans-I/O iSCSI (RFC 7143). No module here imports asyncio, socket, time or logging setup."""
