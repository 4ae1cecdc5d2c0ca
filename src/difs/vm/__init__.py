"""Virtual machines as difs applications: a small guest booted by QEMU on an application's disk.

The guest image is built locally from Debian packages (:mod:`difs.vm.image`); QEMU boots it
with the application's NBD export as its virtio disk (:mod:`difs.vm.qemu`); a workload in the
guest prints its result on the serial console, which :mod:`difs.vm.console` parses.
:mod:`difs.vm.lifecycle` is the seed's power-on -> bind and power-off -> unbind, through the
manager's API (:mod:`difs.nodelink.client`); :mod:`difs.vm.store` keeps the definitions.
This is a process-level package like ``cli``: it never imports controller, host or manager.
"""
