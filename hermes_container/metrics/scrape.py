"""One scrape of the whole container: every collector, rendered for Prometheus.

`Scraper.render(accept)` is synchronous (file reads, s6-svstat, SQL): the dashboard calls
it in a worker thread, one scrape at a time. prometheus-client is imported at the first
scrape, so a dashboard that is never scraped does not carry it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from hermes_container.home import HermesHome
from hermes_container.metrics import names
from hermes_container.metrics.collectors import (
    AuthCounters,
    BoardCollector,
    Collector,
    FilesCollector,
    SupervisionCollector,
)

log = logging.getLogger("hermes.metrics")


class _Guarded:
    """Runs each collector in turn; one that fails is logged and reported as down."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors

    def collect(self) -> Iterable[Any]:
        from prometheus_client.core import GaugeMetricFamily

        up = GaugeMetricFamily(
            names.COLLECTOR_UP,
            "1 when this part of the scrape was collected, 0 when it failed (see the log)",
            labels=["collector"],
        )
        for collector in self.collectors:
            if isinstance(collector, SupervisionCollector):
                collector.prefetch()
        for collector in self.collectors:
            try:
                families = list(collector.collect())
            except Exception as exc:
                log.warning("metrics: the %s collector failed: %s", collector.name, exc)
                up.add_metric([collector.name], 0.0)
                continue
            up.add_metric([collector.name], 1.0)
            yield from families
        yield up


class Scraper:
    def __init__(
        self,
        home: HermesHome,
        auth: AuthCounters | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.auth = auth or AuthCounters()
        self.collectors: list[Collector] = [
            FilesCollector(home.root),
            SupervisionCollector(home),
            BoardCollector(home, env),
            self.auth,
        ]
        self._lock = threading.Lock()
        self._registry: Any = None

    def registry(self) -> Any:
        if self._registry is None:
            from prometheus_client import CollectorRegistry

            registry = CollectorRegistry(auto_describe=False)
            registry.register(_Guarded(self.collectors))
            self._registry = registry
        return self._registry

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type (OpenMetrics when asked for)."""
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept or "")
        with self._lock:
            return encoder(self.registry()), content_type

    def close(self) -> None:
        for collector in self.collectors:
            close = getattr(collector, "close", None)
            if close is not None:
                close()
