"""Prometheus metrics: one registry per daemon, every metric defined here.

A registry per daemon (rather than prometheus_client's global one) keeps
several daemons in one test process from colliding.
"""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from pkg.version import narwhal_version

__all__ = ["Metrics", "CONTENT_TYPE_LATEST"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.build_info = Gauge(
            "narwhal_build_info", "Narwhal build information", ["version"], registry=r
        )
        self.build_info.labels(version=narwhal_version()).set(1)
        self.containerd_up = Gauge(
            "narwhal_containerd_up", "1 when containerd answers its health check", registry=r
        )
        self.containerd_restarts = Counter(
            "narwhal_containerd_restarts", "Times the owned containerd was restarted", registry=r
        )
        self.cri_requests = Counter(
            "narwhal_cri_requests", "CRI requests by method and gRPC code", ["method", "code"], registry=r
        )
        self.cri_latency = Histogram(
            "narwhal_cri_request_duration_seconds", "CRI request latency", ["method"], registry=r
        )
        self.docker_requests = Counter(
            "narwhal_docker_requests", "Docker API requests by route and status", ["route", "status"],
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
