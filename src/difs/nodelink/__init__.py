"""The node side of the out-of-band link to the manager: what controllers, hosts and the CLI
use to talk to it over HTTP.

==========  ======================================================================
module      what it gives
==========  ======================================================================
``client``  :class:`ManagerClient`, a small synchronous client of the manager's REST
            API; :class:`ManagerUnreachable` and :class:`ManagerError`
``link``    :class:`NodeLink`, a node's periodic exchange with the manager (advertise,
            pull what it should serve, push what it measured) in a worker thread
==========  ======================================================================

Only HTTP connects the processes: this package never imports :mod:`difs.manager`, and
controllers and hosts reach the manager only through it.
"""
