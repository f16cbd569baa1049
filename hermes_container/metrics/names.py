"""Every metric the container exports: name, help text, labels and buckets, in one place.

Conventions (https://prometheus.io/docs/practices/naming/): the `hermes_` prefix, base
units in the name (`_seconds`), `_total` on counters (prometheus-client adds it to a
Counter's name), no unit-less durations. `tests/unit/test_metrics_names.py` checks a
real scrape against these rules and against this catalogue.
"""

from __future__ import annotations

# Written by each gateway process (multiprocess files), label `profile` first.
REQUESTS = "hermes_gateway_requests"  # Counter: exported as hermes_gateway_requests_total
REQUESTS_HELP = "HTTP requests the gateway answered, by route and status"
REQUEST_DURATION = "hermes_gateway_request_duration_seconds"
REQUEST_DURATION_HELP = (
    "Time from a chat completion's arrival to the last byte of its answer (/health and "
    "/v1/models, answered locally in microseconds, are counted but not timed)"
)
CHAT_ROUTE = "/v1/chat/completions"
UPSTREAM_DURATION = "hermes_gateway_upstream_duration_seconds"
UPSTREAM_DURATION_HELP = (
    "Time the model provider took for a chat completion: request sent to the last byte "
    "(a stream's end), failures included"
)
TOKENS = "hermes_gateway_tokens"  # exported as hermes_gateway_tokens_total
TOKENS_HELP = "Tokens the model provider reported in its usage block, by type (input, output)"
IN_FLIGHT = "hermes_gateway_in_flight_requests"
IN_FLIGHT_HELP = "Requests being served right now"
UPSTREAM_ERRORS = "hermes_gateway_upstream_errors"  # exported as ..._total
UPSTREAM_ERRORS_HELP = "Failed exchanges with the model provider, by kind"

# Written by the dispatcher process.
TICK_DURATION = "hermes_board_dispatch_tick_duration_seconds"
TICK_DURATION_HELP = "Duration of one dispatcher tick of a board"
JOB_EVENTS = "hermes_job_events"  # exported as ..._total
JOB_EVENTS_HELP = "Job events written by this dispatcher, by kind (scheduled, retry_scheduled, ...)"
JOB_SLOT_LAG = "hermes_job_slot_lag_seconds"
JOB_SLOT_LAG_HELP = "Seconds from a job's slot time to the moment it fired"

# Collected when scraped, by the dashboard.
GATEWAY_UP = "hermes_gateway_up"
GATEWAY_READY = "hermes_gateway_ready"
GATEWAY_RESTARTS = "hermes_gateway_restarts"  # exported as ..._total
GATEWAY_PARKED = "hermes_gateway_parked"
GATEWAY_DESIRED_RUNNING = "hermes_gateway_desired_running"
GATEWAY_MISMATCH = "hermes_gateway_desired_mismatch"
BOARD_TASKS = "hermes_board_tasks"
BOARD_RUNS = "hermes_board_runs"  # exported as ..._total
BOARD_OLDEST_READY = "hermes_board_oldest_ready_task_age_seconds"
JOBS = "hermes_jobs"
JOB_RUNS = "hermes_job_runs"
JOB_DELIVERIES = "hermes_job_deliveries"
LOGINS = "hermes_dashboard_logins"  # exported as ..._total
LOGIN_DENIALS = "hermes_dashboard_login_denials"
LOGIN_FAILURES = "hermes_dashboard_login_failures"
COLLECTOR_UP = "hermes_metrics_collector_up"

# Seconds. A chat completion spans milliseconds (a cached answer) to minutes (a long
# stream); the gateway's own overhead is well under the first bucket.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TICK_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Route label values: the gateway's own routes, anything else is `other` (a scanner
# probing random paths must not create a series per path).
ROUTES = ("/health", "/v1/models", "/v1/chat/completions")
OTHER_ROUTE = "other"

# Upstream error kinds: the transport failures of gateway/upstream.py and the provider's
# HTTP answers the relay turns into errors.
UPSTREAM_ERROR_KINDS = (
    "connect",
    "connect_timeout",
    "read_timeout",
    "protocol",
    "too_large",
    "auth",
    "rate_limited",
    "client_error",
    "server_error",
    "redirect",
)

# Every family a scrape may contain, as exported (counters with `_total`), and its type.
CATALOGUE: dict[str, str] = {
    REQUESTS + "_total": "counter",
    REQUEST_DURATION: "histogram",
    UPSTREAM_DURATION: "histogram",
    TOKENS + "_total": "counter",
    IN_FLIGHT: "gauge",
    UPSTREAM_ERRORS + "_total": "counter",
    TICK_DURATION: "histogram",
    JOB_EVENTS + "_total": "counter",
    JOB_SLOT_LAG: "histogram",
    GATEWAY_UP: "gauge",
    GATEWAY_READY: "gauge",
    GATEWAY_RESTARTS + "_total": "counter",
    GATEWAY_PARKED: "gauge",
    GATEWAY_DESIRED_RUNNING: "gauge",
    GATEWAY_MISMATCH: "gauge",
    BOARD_TASKS: "gauge",
    BOARD_RUNS + "_total": "counter",
    BOARD_OLDEST_READY: "gauge",
    JOBS: "gauge",
    JOB_RUNS: "gauge",
    JOB_DELIVERIES: "gauge",
    LOGINS + "_total": "counter",
    LOGIN_DENIALS + "_total": "counter",
    LOGIN_FAILURES + "_total": "counter",
    COLLECTOR_UP: "gauge",
}


def http_status_kind(status: int) -> str:
    """The upstream error kind of a provider's non-2xx HTTP status."""
    if status in (401, 403):
        return "auth"
    if status == 429:
        return "rate_limited"
    if 300 <= status < 400:
        return "redirect"
    if 400 <= status < 500:
        return "client_error"
    return "server_error"
