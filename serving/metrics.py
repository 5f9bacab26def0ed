"""Prometheus metrics of the predictor, exposed by KServe's ``/metrics`` (the default registry).

KServe already records per-stage histograms (``request_preprocess_seconds``, ``request_predict_seconds``,
...). These add what an operator asks first: how many requests, how fast end to end, which errors, and
how well the micro-batcher coalesces. Labels stay low-cardinality: the endpoint is a fixed name, never a
raw path. ``version`` is the registered version served (empty when unknown), so that two versions served
side by side during a rollout are told apart.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

REQUESTS = Counter(
    "radpipe_serving_requests",
    "HTTP requests answered, by endpoint and status code.",
    ["model", "version", "endpoint", "code"],
)
LATENCY = Histogram(
    "radpipe_serving_request_duration_seconds",
    "Time from request start to the end of the answer, by endpoint.",
    ["model", "version", "endpoint"],
    buckets=LATENCY_BUCKETS,
)
ERRORS = Counter(
    "radpipe_serving_request_errors",
    "Requests answered with an error, by kind (not_an_image, empty_body, wrong_shape, image_too_large, "
    "request_too_large, request_too_many_pixels, unknown_model, unauthorized, cross_origin, not_ready, "
    "internal, ...).",
    ["model", "version", "endpoint", "kind"],
)
IMAGES = Counter("radpipe_serving_images", "Images classified.", ["model", "version"])
BATCH_SIZE = Histogram(
    "radpipe_serving_batch_size",
    "Images per model call (the micro-batcher coalesces concurrent requests).",
    ["model", "version"],
    buckets=(1, 2, 4, 8, 16, 32, 64),
)
