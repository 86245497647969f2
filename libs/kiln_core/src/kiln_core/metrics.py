"""Every Prometheus metric a Kiln process exports, in one place.

Names follow Prometheus conventions (base units, ``_total`` counters). No metric has a
``service`` label: the scrape adds the service and process to every series, and a label of the
same name would be renamed ``exported_service``. No ``_created`` series are exported either
(they double the series count and nothing here reads them)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

disable_created_metrics()

# --- HTTP (API processes) -------------------------------------------------------------------
HTTP_REQUESTS = Counter(
    "kiln_http_requests_total", "HTTP requests by route template and status",
    ["method", "route", "status"],
)  # fmt: skip
HTTP_SECONDS = Histogram(
    "kiln_http_request_seconds", "HTTP request latency by route template", ["route"]
)
REQUESTS_SHED = Counter(
    "kiln_http_requests_shed_total",
    "Requests refused with 429 or 503 before any work (rate limit or overload)",
    ["reason"],
)

# --- events: outbox (producer) and inbox (consumer) -----------------------------------------
EVENTS_PUBLISHED = Counter(
    "kiln_events_published_total", "Outbox events published to the bus", ["topic"]
)
OUTBOX_PENDING = Gauge("kiln_outbox_pending_rows", "Outbox rows not yet published")
OUTBOX_OLDEST_AGE = Gauge(
    "kiln_outbox_oldest_pending_age_seconds",
    "Age of the oldest outbox row not yet published (0 when none waits)",
)
EVENTS_HANDLED = Counter(
    "kiln_events_handled_total",
    "Events taken by an inbox consumer, by outcome "
    "(applied, duplicate, ignored, dead_lettered, retried)",
    ["consumer", "outcome"],
)
EVENT_HANDLE_SECONDS = Histogram(
    "kiln_event_handle_seconds", "Time to apply one event in its transaction", ["consumer"]
)
EVENTS_DEAD_LETTERED = Counter(
    "kiln_events_dead_lettered_total",
    "Events a consumer gave up on and wrote to the topic's dead-letter topic",
    ["consumer", "topic", "error_type"],
)
CONSUMER_LAG = Gauge(
    "kiln_consumer_lag_records",
    "Records of a partition the consumer group has not yet taken (end offset - position)",
    ["group", "topic", "partition"],
)

# --- long work (Celery) ---------------------------------------------------------------------
JOBS_ENQUEUED = Counter("kiln_jobs_enqueued_total", "Jobs handed to the workers", ["queue"])
JOBS = Gauge("kiln_jobs", "Jobs by table and state, as the database says", ["table", "state"])
CELERY_QUEUE_DEPTH = Gauge(
    "kiln_celery_queue_depth", "Tasks waiting in a Celery queue of the broker", ["queue"]
)
CELERY_TASKS = Counter(
    "kiln_celery_tasks_total",
    "Celery tasks a worker finished, by outcome (succeeded, failed, retried, rejected)",
    ["task", "outcome"],
)
CELERY_TASK_SECONDS = Histogram(
    "kiln_celery_task_seconds",
    "Time a worker spent on one task",
    ["task"],
    buckets=(0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 14400),
)
TRAINING_WORKERS_LOST = Counter(
    "kiln_training_workers_lost_total",
    "Training runs whose worker stopped renewing its lease (crashed, killed, cut off)",
)

# --- serving --------------------------------------------------------------------------------
PREDICTIONS = Counter(
    "kiln_predictions_total", "Inputs answered, by endpoint and model version",
    ["endpoint", "version"],
)  # fmt: skip
PREDICTIONS_FLAGGED = Counter(
    "kiln_predictions_flagged_total",
    "Answers under the endpoint's confidence threshold, offered for labelling",
    ["endpoint", "version"],
)
CANARY_STEPS = Counter(
    "kiln_canary_steps_total", "Canary steps passed (more traffic to the candidate)", ["endpoint"]
)
CANARY_ROLLBACKS = Counter(
    "kiln_canary_rollbacks_total", "Candidates rolled back (all traffic to stable)", ["endpoint"]
)
CANARY_PROMOTIONS = Counter(
    "kiln_canary_promotions_total", "Candidates promoted to stable", ["endpoint"]
)
TRITON_MODEL_READY = Gauge(
    "kiln_triton_model_ready", "1 when Triton has the model loaded and ready, else 0", ["model"]
)

# --- readiness ------------------------------------------------------------------------------
DEPENDENCY_UP = Gauge(
    "kiln_dependency_up",
    "1 when the process's last readiness check of a dependency passed, else 0",
    ["dependency"],
)
PROCESS_READY = Gauge(
    "kiln_ready", "1 when the process's last readiness check passed, else 0 (see /readyz)"
)


def record_checks(checks: dict[str, str]) -> bool:
    """Export the outcome of a readiness check (``{dependency: "ok" | why not}``); whether
    every dependency is ok."""
    for name, outcome in checks.items():
        DEPENDENCY_UP.labels(name).set(1 if outcome == "ok" else 0)
    ready = all(outcome == "ok" for outcome in checks.values())
    PROCESS_READY.set(1 if ready else 0)
    return ready
