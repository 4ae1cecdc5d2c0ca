"""Sans-I/O SCSI block device (SBC-4 / SPC-4) over a block-store interface."""
