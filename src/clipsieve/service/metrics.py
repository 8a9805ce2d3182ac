"""Prometheus metrics of one service instance (its own registry, so apps in one process —
tests — never share counters)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["Metrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128, 256)


class Metrics:
    """The counters, histograms and gauges served at ``GET /metrics``.

    Args:
        queue_depth: returns the number of images waiting for the model.
        in_flight: returns the number of admitted requests.
    """

    def __init__(self, queue_depth: Callable[[], float], in_flight: Callable[[], float]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "clipsieve_http_requests", "HTTP requests answered, by route, method and status.",
            ["route", "method", "status"], registry=r)
        self.latency = Histogram(
            "clipsieve_http_request_duration_seconds",
            "Time from the request's arrival to the end of its response, by route.",
            ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "clipsieve_batch_size", "Images per model call.", buckets=_BATCH_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "clipsieve_batch_duration_seconds", "Time of one model call with its heads.",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.images = Counter(
            "clipsieve_images", "Images analysed, by endpoint.", ["endpoint"], registry=r)
        self.decisions = Counter(
            "clipsieve_moderation_decisions",
            "Moderation decisions of analysed images (whole item), by policy and decision.",
            ["policy", "decision"], registry=r)
        self.category_decisions = Counter(
            "clipsieve_category_decisions",
            "Per-category decisions of analysed images, by policy, category and decision.",
            ["policy", "category", "decision"], registry=r)
        self.rejected = Counter(
            "clipsieve_rejected_requests",
            "Requests refused before analysis, by reason (overloaded, not_ready, timeout).",
            ["reason"], registry=r)
        self.jobs = Counter(
            "clipsieve_jobs", "Video jobs that ended, by final status.", ["status"], registry=r)
        queue = Gauge("clipsieve_queue_depth", "Images waiting for the model.", registry=r)
        queue.set_function(queue_depth)
        flight = Gauge("clipsieve_requests_in_flight",
                       "Analysis requests admitted and not yet answered.", registry=r)
        flight.set_function(in_flight)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.batch_seconds.observe(seconds)

    def observe_results(self, endpoint: str, results: Iterable[dict[str, Any]]) -> None:
        n = 0
        for r in results:
            n += 1
            mod = r.get("moderation")
            if not mod:
                continue
            policy = str((mod.get("policy") or {}).get("name", ""))
            self.decisions.labels(policy, mod.get("decision", "")).inc()
            for category, decision in (mod.get("category_decisions") or {}).items():
                self.category_decisions.labels(policy, category, decision).inc()
        if n:
            self.images.labels(endpoint).inc(n)

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST
