"""Prometheus metrics of a controller, read from its live counters at scrape time.

Nothing is added to the per-I/O path: the adapter already keeps plain integer counters
and a latency histogram per session x volume (:class:`~difs.controller.enforcement.IoStats`),
the PI stores count their checks, and the iSCSI cores count their CRC32C work; this
collector turns them into metric families when scraped. Sessions whose logins settled
different authentication or arrived on different local addresses keep separate counters
(the evidence tells them apart); the ``PATH`` families add them up.

Families (counters unless noted); ``PATH`` is ``volume, initiator, channel,
header_digest, data_digest`` (channel = ISID & FFFFh, the host's channel number):

- ``difs_controller_commands_total{PATH}`` - SCSI commands addressed to the volume;
- ``difs_controller_bytes_total{PATH,direction}`` - the volume's data moved (``read`` /
  ``write``, PI bytes included when PI travels; what INQUIRY, READ CAPACITY and the other
  commands that only describe the unit return is not counted);
- ``difs_controller_rejections_total{PATH,reason}`` - commands refused by the volume's
  policy (reasons in :mod:`difs.controller.enforcement`);
- ``difs_controller_pi_checked_blocks_total{PATH}`` /
  ``difs_controller_pi_generated_blocks_total{PATH}`` - blocks whose PI the controller
  checked / generated; ``difs_controller_pi_check_failures_total{PATH,check}`` - commands
  failed by a guard / app / ref check;
- ``difs_controller_volume_rejections_total{volume,reason}``,
  ``difs_controller_volume_pi_checked_blocks_total{volume}``,
  ``difs_controller_volume_pi_check_failures_total{volume,check}`` - per volume, all
  sessions (and the controller's own reads, e.g. EXTENDED COPY);
- ``difs_controller_volume_info{volume,application,pi_type,requires}`` (gauge, 1);
- ``difs_controller_latency_seconds{PATH}`` (histogram) - each command from the arrival
  of its command PDU to its response queued (refused commands included; buckets
  :data:`difs.policy.evidence.LATENCY_BOUNDS_MS`);
- ``difs_controller_digest_bytes_total{PATH}`` - data bytes of the volume's commands on a
  session that negotiated CRC32C data digests (0 on the others);
- ``difs_controller_session_info{initiator,channel,authentication,header_digest,
  data_digest,interface}`` (gauge, 1) - the open sessions and what their logins settled
  (``authentication``: ``none`` / ``chap`` / ``mutual_chap``; ``interface``: the local
  address:port the session's connection arrived on);
- ``difs_controller_digest_errors_total{LINK}`` - CRC32C header and data digest mismatches
  the sessions' connections detected;
- ``difs_controller_digests_total{LINK}`` and ``difs_controller_digest_covered_bytes_total
  {LINK}`` - CRC32C digests computed or verified and the bytes they covered, headers
  included (closed connections included); ``LINK`` is ``target, initiator, channel,
  header_digest, data_digest``;
- ``difs_controller_connections`` (gauge) - open iSCSI connections;
  ``difs_controller_connections_accepted_total``,
  ``difs_controller_connections_refused_total{limit}`` (``total`` / ``address``: closed at
  once for a connection limit), ``difs_controller_logins_total``,
  ``difs_controller_logins_refused_total{status}``,
  ``difs_controller_sessions_reinstated_total``;
- QoS, per volume with QoS parameters (:mod:`difs.controller.qos`):
  ``difs_controller_qos_queue_depth{volume}`` (gauge) - commands waiting for their turn;
  ``difs_controller_qos_delayed_total{volume}`` - commands that waited;
  ``difs_controller_qos_wait_seconds_total{volume}`` - the time they waited, in all;
  ``difs_controller_qos_dispatched_total{volume,phase}`` - commands run in the
  ``reservation`` / ``weight`` phase; ``difs_controller_qos_refused_total{volume}`` -
  answered TASK SET FULL (queue full); ``difs_controller_qos_capacity_iops`` /
  ``difs_controller_qos_capacity_bytes_per_second`` (gauges) - the capacity in use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from difs.policy.evidence import LatencyRecorder
from difs.util.units import parse_portal

if TYPE_CHECKING:
    from difs.controller.enforcement import IoStats
    from difs.controller.server import Controller

PATH = ["volume", "initiator", "channel", "header_digest", "data_digest"]
LINK = ["target", "initiator", "channel", "header_digest", "data_digest"]
SESSION = ["initiator", "channel", "authentication", "header_digest", "data_digest",
           "interface"]


def _by_path(stats: list[IoStats]) -> dict[tuple[str, ...], list[IoStats]]:
    """The IoStats of each PATH label set (sessions that differ only in authentication or
    interface share one)."""
    groups: dict[tuple[str, ...], list[IoStats]] = {}
    for s in stats:
        groups.setdefault(s.labels, []).append(s)
    return groups


def _latency(group: list[IoStats]) -> LatencyRecorder:
    if len(group) == 1:
        return group[0].latency
    total = LatencyRecorder()
    for s in group:
        total.counts = [a + b for a, b in zip(total.counts, s.latency.counts, strict=True)]
        total.sum_ns += s.latency.sum_ns
    return total


def _merged(dicts) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for key, count in list(d.items()):
            out[key] = out.get(key, 0) + count
    return out


class ControllerCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self):
        enforcement = self.controller.enforcement
        commands = CounterMetricFamily("difs_controller_commands",
                                       "SCSI commands addressed to a volume, by path", labels=PATH)
        nbytes = CounterMetricFamily("difs_controller_bytes", "bytes moved, by path",
                                     labels=[*PATH, "direction"])
        rejections = CounterMetricFamily("difs_controller_rejections",
                                         "commands refused by the volume's policy, by path",
                                         labels=[*PATH, "reason"])
        checked = CounterMetricFamily("difs_controller_pi_checked_blocks",
                                      "blocks whose protection information was checked",
                                      labels=PATH)
        generated = CounterMetricFamily("difs_controller_pi_generated_blocks",
                                        "blocks whose protection information the controller "
                                        "generated", labels=PATH)
        failures = CounterMetricFamily("difs_controller_pi_check_failures",
                                       "commands failed by a PI check", labels=[*PATH, "check"])
        digest_bytes = CounterMetricFamily("difs_controller_digest_bytes",
                                           "data bytes of the volume's commands on a session "
                                           "with CRC32C data digests", labels=PATH)
        latency = HistogramMetricFamily("difs_controller_latency_seconds",
                                        "SCSI command latency at the controller, from the "
                                        "command PDU's arrival to the response queued",
                                        labels=PATH)
        for key, group in _by_path(list(enforcement.stats.values())).items():
            labels = list(key)
            commands.add_metric(labels, sum(s.commands for s in group))
            nbytes.add_metric([*labels, "read"], sum(s.read_bytes for s in group))
            nbytes.add_metric([*labels, "write"], sum(s.write_bytes for s in group))
            for reason, count in _merged(s.rejected for s in group).items():
                rejections.add_metric([*labels, reason], count)
            checked.add_metric(labels, sum(s.pi_checked for s in group))
            generated.add_metric(labels, sum(s.pi_generated for s in group))
            for kind, count in _merged(s.pi_failed for s in group).items():
                failures.add_metric([*labels, kind], count)
            digest_bytes.add_metric(labels, sum(s.digest_bytes for s in group))
            buckets, sum_seconds = _latency(group).cumulative_seconds()
            latency.add_metric(labels, buckets, sum_seconds)
        yield from (commands, nbytes, rejections, checked, generated, failures, digest_bytes,
                    latency)
        yield from self._volumes()
        yield from self._sessions()
        yield from self._qos()
        yield from self._digests()
        yield from self._connections()

    def _sessions(self):
        controller = self.controller
        info = GaugeMetricFamily("difs_controller_session_info",
                                 "an open session and the services its login settled",
                                 labels=SESSION)
        open_sessions = {(f.initiator, str(f.channel), f.authentication,
                          str(f.header_digest).lower(), str(f.data_digest).lower(),
                          f.interface or "")
                         for c in list(controller._connections)
                         if (f := c.facts) is not None and not c.core.closed}
        for labels in sorted(open_sessions):
            info.add_metric(list(labels), 1)
        errors = CounterMetricFamily("difs_controller_digest_errors",
                                     "CRC32C digest mismatches detected on a session's "
                                     "connections", labels=LINK)
        totals: dict[tuple[str, ...], int] = {}
        for f in list(controller.enforcement.sessions.values()):
            key = (f.target, f.initiator, str(f.channel), str(f.header_digest).lower(),
                   str(f.data_digest).lower())
            totals[key] = totals.get(key, 0) + f.digest_errors
        for key, count in totals.items():
            errors.add_metric(list(key), count)
        yield from (info, errors)

    def _connections(self):
        controller = self.controller
        stats = controller.stats
        yield GaugeMetricFamily("difs_controller_connections", "open iSCSI connections",
                                value=len(controller._connections))
        yield CounterMetricFamily("difs_controller_connections_accepted",
                                  "iSCSI connections accepted", value=stats.connections)
        refused = CounterMetricFamily("difs_controller_connections_refused",
                                      "connections closed at once for a connection limit",
                                      labels=["limit"])
        for limit, count in list(stats.refused.items()):
            refused.add_metric([limit], count)
        yield refused
        yield CounterMetricFamily("difs_controller_logins", "logins completed",
                                  value=stats.logins)
        logins_refused = CounterMetricFamily("difs_controller_logins_refused",
                                             "logins refused, by login status",
                                             labels=["status"])
        for status, count in list(stats.logins_refused.items()):
            logins_refused.add_metric([status], count)
        yield logins_refused
        yield CounterMetricFamily("difs_controller_sessions_reinstated",
                                  "sessions in use replaced by a new login of their I_T nexus",
                                  value=stats.reinstatements)

    def _volumes(self):
        enforcement = self.controller.enforcement
        rejections = CounterMetricFamily("difs_controller_volume_rejections",
                                         "commands refused by the volume's policy",
                                         labels=["volume", "reason"])
        checked = CounterMetricFamily("difs_controller_volume_pi_checked_blocks",
                                      "blocks of the volume whose PI was checked",
                                      labels=["volume"])
        failures = CounterMetricFamily("difs_controller_volume_pi_check_failures",
                                       "PI check failures on the volume",
                                       labels=["volume", "check"])
        info = GaugeMetricFamily("difs_controller_volume_info", "a served volume and its policy",
                                 labels=["volume", "application", "pi_type", "requires"])
        for lu, policy in list(enforcement.policies.items()):
            name = policy.volume
            for reason, count in list(enforcement.volume_rejections.get(name, {}).items()):
                rejections.add_metric([name, reason], count)
            info.add_metric([name, policy.application, str(policy.pi_type), policy.describe()], 1)
            if lu.pi_type:
                checked.add_metric([name], lu.store.checked_blocks)
                for kind, count in lu.store.failed.items():
                    failures.add_metric([name, kind], count)
        yield from (rejections, checked, failures, info)

    def _qos(self):
        depth = GaugeMetricFamily("difs_controller_qos_queue_depth",
                                  "commands waiting for their QoS turn", labels=["volume"])
        delayed = CounterMetricFamily("difs_controller_qos_delayed",
                                      "commands that waited for their QoS turn", labels=["volume"])
        waited = CounterMetricFamily("difs_controller_qos_wait_seconds",
                                     "seconds commands waited for their QoS turn, in all",
                                     labels=["volume"])
        phases = CounterMetricFamily("difs_controller_qos_dispatched",
                                     "commands run by the QoS scheduler, by phase",
                                     labels=["volume", "phase"])
        refused = CounterMetricFamily("difs_controller_qos_refused",
                                      "commands answered TASK SET FULL: QoS queue full",
                                      labels=["volume"])
        scheduler = self.controller.qos.scheduler
        for name, client in list(scheduler.clients.items()):
            depth.add_metric([name], client.depth)
            delayed.add_metric([name], client.delayed)
            waited.add_metric([name], client.waited)
            phases.add_metric([name, "reservation"], client.dispatched[0])
            phases.add_metric([name, "weight"], client.dispatched[1])
            refused.add_metric([name], client.refused)
        yield from (depth, delayed, waited, phases, refused)
        capacity = scheduler.capacity
        if capacity is not None:
            yield GaugeMetricFamily("difs_controller_qos_capacity_iops",
                                    "IOPS the controller can do in all (QoS)", value=capacity.iops)
            yield GaugeMetricFamily("difs_controller_qos_capacity_bytes_per_second",
                                    "bytes/s the controller can do in all (QoS)",
                                    value=capacity.bytes_per_second)

    def _digests(self):
        controller = self.controller
        totals: dict[tuple, list[int]] = {k: list(v) for k, v in
                                          controller.digest_history.items()}
        for conn in list(controller._connections):
            if conn.core is None or conn.session is None:
                continue
            count, covered = conn.core.digest_work
            entry = totals.setdefault(conn.digest_key(), [0, 0])
            entry[0] += count
            entry[1] += covered
        digests = CounterMetricFamily("difs_controller_digests",
                                      "CRC32C digests computed or verified", labels=LINK)
        digest_bytes = CounterMetricFamily("difs_controller_digest_covered_bytes",
                                           "bytes covered by CRC32C digests (headers "
                                           "included)", labels=LINK)
        for (target, initiator, channel, hd, dd), (count, covered) in totals.items():
            labels = [target, initiator, str(channel), str(hd).lower(), str(dd).lower()]
            digests.add_metric(labels, count)
            digest_bytes.add_metric(labels, covered)
        yield from (digests, digest_bytes)


def serve_metrics(controller: Controller, listen: str) -> tuple[str, int]:
    """Serve the metrics on ``listen`` (HOST:PORT, port 0 = any); returns where."""
    registry = CollectorRegistry()
    registry.register(ControllerCollector(controller))
    address, port = parse_portal(listen, default_port=9102)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return address, server.server_port
