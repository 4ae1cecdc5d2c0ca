"""Prometheus metrics of a host, read from its live counters at scrape time.

Nothing is added to the per-I/O path by scraping: the disks and paths keep plain integer
counters and latency histograms (``AppDisk.per_path`` and ``AppDisk.tallies``, ``Path.ios``…,
the iSCSI core's digest work); this collector turns them into metric families when scraped.

Families (all counters unless noted):

- ``difs_host_app_ios_total{app,controller,channel}`` / ``difs_host_app_bytes_total`` —
  which path carried each application's I/O;
- ``difs_host_app_latency_seconds{app,controller,channel}`` (histogram) — each command of an
  application from its submission to its completion, by the path that completed it (bucket
  bounds :data:`difs.policy.evidence.LATENCY_BOUNDS_MS`);
- ``difs_host_app_digest_bytes_total{app,controller,channel}`` — an application's bytes a
  CRC32C data digest covered (its bytes on a path that negotiated DataDigest);
- ``difs_host_app_path_pi_generated_blocks_total{app,controller,channel}`` /
  ``..._path_pi_checked_blocks_total`` / ``..._path_pi_errors_total{...,found_by}`` — the PI
  work below, by path;
- ``difs_host_app_rejected_total{app,controller,channel}`` — commands the controller answered
  with CHECK CONDITION (unit attentions aside);
- ``difs_host_app_resent_total{app}``, ``difs_host_app_failed_total{app}``;
- ``difs_host_app_pi_generated_blocks_total{app}`` / ``..._pi_checked_blocks_total`` — T10 PI
  tuples the host generated on writes and verified on reads; ``..._pi_errors_total{app,found_by}``
  — PI check failures found by the host or reported by the controller;
- ``difs_host_app_qos_waits_total{app}`` — I/Os the application's limit held back;
- ``difs_host_path_digests_total{controller,target,channel}`` and
  ``difs_host_path_digest_bytes_total`` — CRC32C digests computed or verified;
  ``difs_host_path_digest_errors_total`` — digest mismatches found by the host or reported by
  the controller (ABORTED COMMAND 47h/05h);
- ``difs_host_path_up{controller,target,channel,services}`` (gauge).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from difs.policy.fast import describe_flags
from difs.util.units import parse_portal

if TYPE_CHECKING:
    from difs.host.agent import Host


class HostCollector(Collector):
    def __init__(self, host: Host) -> None:
        self.host = host

    def collect(self):
        ios = CounterMetricFamily("difs_host_app_ios", "I/Os of an application, by path",
                                  labels=["app", "controller", "channel"])
        nbytes = CounterMetricFamily("difs_host_app_bytes", "bytes of an application, by path",
                                     labels=["app", "controller", "channel"])
        resent = CounterMetricFamily("difs_host_app_resent", "I/Os re-sent after a path failed",
                                     labels=["app"])
        failed = CounterMetricFamily("difs_host_app_failed", "I/Os failed to the application",
                                     labels=["app"])
        pi_generated = CounterMetricFamily("difs_host_app_pi_generated_blocks",
                                           "T10 PI tuples generated for written blocks",
                                           labels=["app"])
        pi_checked = CounterMetricFamily("difs_host_app_pi_checked_blocks",
                                         "T10 PI tuples verified on read", labels=["app"])
        pi_errors = CounterMetricFamily("difs_host_app_pi_errors", "T10 PI check failures",
                                        labels=["app", "found_by"])
        qos_waits = CounterMetricFamily("difs_host_app_qos_waits",
                                        "I/Os held back by the application's limit", labels=["app"])
        per_path = _PerPathFamilies()
        for app in list(self.host.apps.values()):
            disk = app.disk
            for channel, (count, moved) in list(disk.per_path.items()):
                labels = [app.name, app.controller, str(channel)]
                ios.add_metric(labels, count)
                nbytes.add_metric(labels, moved)
            for channel, tally in list(disk.tallies.items()):
                per_path.add(app.name, app.controller, channel, tally)
            resent.add_metric([app.name], disk.resent)
            failed.add_metric([app.name], disk.failed)
            pi_generated.add_metric([app.name], disk.pi_generated_blocks)
            pi_checked.add_metric([app.name], disk.pi_checked_blocks)
            pi_errors.add_metric([app.name, "host"], disk.pi_errors)
            pi_errors.add_metric([app.name, "controller"], disk.pi_rejected)
            qos_waits.add_metric([app.name], disk.qos_waits)
        digests = CounterMetricFamily("difs_host_path_digests",
                                      "CRC32C digests computed or verified on a path",
                                      labels=["controller", "target", "channel"])
        digest_bytes = CounterMetricFamily("difs_host_path_digest_bytes",
                                           "bytes covered by CRC32C digests on a path",
                                           labels=["controller", "target", "channel"])
        digest_errors = CounterMetricFamily("difs_host_path_digest_errors",
                                            "CRC32C digest mismatches on a path (found by the "
                                            "host or reported by the controller)",
                                            labels=["controller", "target", "channel"])
        up = GaugeMetricFamily("difs_host_path_up", "1 when the path is established",
                               labels=["controller", "target", "channel", "services"])
        for group in list(self.host.groups.values()):
            for path in group.paths:
                labels = [group.controller, group.target, str(path.channel)]
                count, covered = path_digest_work(path)
                digests.add_metric(labels, count)
                digest_bytes.add_metric(labels, covered)
                digest_errors.add_metric(labels, path.digest_errors)
                services = ",".join(describe_flags(path.negotiated.flags)) \
                    if path.negotiated is not None else ""
                up.add_metric([*labels, services or "none"], 1 if path.is_available() else 0)
        yield from (ios, nbytes, resent, failed, pi_generated, pi_checked, pi_errors, qos_waits,
                    digests, digest_bytes, digest_errors, up)
        yield from per_path.families()


class _PerPathFamilies:
    """The families read from each application's per-path tallies."""

    def __init__(self) -> None:
        labels = ["app", "controller", "channel"]
        self.latency = HistogramMetricFamily(
            "difs_host_app_latency_seconds",
            "latency of an application's commands, submission to completion, by path",
            labels=labels)
        self.digest_bytes = CounterMetricFamily(
            "difs_host_app_digest_bytes", "an application's bytes covered by CRC32C data "
            "digests, by path", labels=labels)
        self.generated = CounterMetricFamily(
            "difs_host_app_path_pi_generated_blocks",
            "T10 PI tuples generated for written blocks, by path", labels=labels)
        self.checked = CounterMetricFamily(
            "difs_host_app_path_pi_checked_blocks", "T10 PI tuples verified on read, by path",
            labels=labels)
        self.pi_errors = CounterMetricFamily(
            "difs_host_app_path_pi_errors", "T10 PI check failures, by path",
            labels=[*labels, "found_by"])
        self.rejected = CounterMetricFamily(
            "difs_host_app_rejected", "commands the controller answered with CHECK CONDITION",
            labels=labels)

    def add(self, app: str, controller: str, channel: int, tally) -> None:
        labels = [app, controller, str(channel)]
        buckets, total = tally.latency.cumulative_seconds()
        self.latency.add_metric(labels, buckets, total)
        self.digest_bytes.add_metric(labels, tally.digest_bytes)
        self.generated.add_metric(labels, tally.pi_generated)
        self.checked.add_metric(labels, tally.pi_checked)
        self.pi_errors.add_metric([*labels, "host"],
                                  tally.pi_guard + tally.pi_app + tally.pi_ref)
        self.pi_errors.add_metric([*labels, "controller"], tally.pi_rejected)
        self.rejected.add_metric(labels, tally.rejected)

    def families(self):
        return (self.latency, self.digest_bytes, self.generated, self.checked, self.pi_errors,
                self.rejected)


def path_digest_work(path) -> tuple[int, int]:
    """Digest work of the path's current session plus that of the sessions before it."""
    count, covered = path.digest_history
    session = path.session
    if session is not None and session.core is not None:
        c, b = session.core.digest_work
        count, covered = count + c, covered + b
    return count, covered


def serve_metrics(host: Host, listen: str) -> tuple[str, int]:
    registry = CollectorRegistry()
    registry.register(HostCollector(host))
    address, port = parse_portal(listen, default_port=9101)
    server, _thread = start_http_server(port, addr=address, registry=registry)
    return address, server.server_port
