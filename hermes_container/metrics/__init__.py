"""Prometheus metrics for the whole container, with prometheus-client.

Writers (separate processes, multiprocess mode, files under
`$HERMES_HOME/run/metrics/<generation>/`: files.py):
  gateway.py   each gateway: requests, latency (gateway and upstream), tokens, in-flight,
               upstream errors; swapped in by gateway/runner.py once the gateway is ready
  dispatch.py  the dispatcher: observe_tick(seconds, board) after every tick
  writer.py    what makes a process a writer (lock, reserved files, the library's mode)

Reader (the dashboard process, at each scrape of GET /metrics: dashboard/metrics_endpoint.py):
  collectors.py  the writers' files, gateway status, the board, dashboard logins
  scrape.py      one registry over them, rendered as text or OpenMetrics

names.py lists every metric. Importing this package imports no third-party library:
prometheus-client is loaded by a writer once it starts and by the first scrape.
"""
