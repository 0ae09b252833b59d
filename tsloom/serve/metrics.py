"""Prometheus metrics on a per-app :class:`CollectorRegistry` (several apps in one process,
as in tests, do not collide)."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
LOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """Requests, latencies, batch sizes, resident models, load times, rejections."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "tsloom_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=r,
        )
        self.latency = Histogram(
            "tsloom_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "tsloom_batch_size",
            "Requests per inference batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )
        self.inference = Histogram(
            "tsloom_inference_duration_seconds",
            "Time of one batched forward pass (scaling included)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.resident = Gauge("tsloom_models_resident", "Models held in the cache", registry=r)
        self.load_time = Histogram(
            "tsloom_model_load_duration_seconds",
            "Time to load (and verify) one model from the registry",
            buckets=LOAD_BUCKETS,
            registry=r,
        )
        self.loads = Counter(
            "tsloom_model_loads", "Model loads by outcome", ["outcome"], registry=r
        )
        self.evictions = Counter(
            "tsloom_model_evictions", "Models evicted from the cache", registry=r
        )
        self.cache_hits = Counter("tsloom_model_cache_hits", "Cache hits", registry=r)
        self.rejected = Counter(
            "tsloom_requests_rejected",
            "Predictions refused because a model's queue was full",
            registry=r,
        )
        self.queued = Gauge(
            "tsloom_predictions_queued", "Predictions waiting for a batch", registry=r
        )
        self.forward_processes = Gauge(
            "tsloom_forward_processes_running",
            "Forward-pass processes alive (0 with runtime torch, or after one failed: "
            "forward passes then run in-process)",
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
