"""The Grafana dashboard, generated: `python -m monitoring.dashboard` rewrites
monitoring/grafana/dashboards/rag-cache.json; `--check` exits 1 when the file is stale.

`PANELS` is the one list of what the dashboard shows; tests parse every query with `promtool` and run each
against a live local stack after a short load (tests/integration/test_monitoring.py). Queries use fixed
windows rather than Grafana's variables so that they are plain PromQL, checkable outside Grafana.

Label cardinality: `route` is the route template, `cache` the X-Cache value, `school` at most
METRICS_MAX_SCHOOLS tenant ids plus "other" (rag_api.monitoring.SchoolLabels), `model` priced models plus
"other" (MODEL_PRICES), `instance` one per replica (Prometheus adds it per target).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deploy.generated import write_or_check

__all__ = ["DASHBOARD_FILE", "DATASOURCE_UID", "PANELS", "Panel", "dashboard", "main"]

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD_FILE = ROOT / "monitoring" / "grafana" / "dashboards" / "rag-cache.json"
DATASOURCE_UID = "prometheus"  # monitoring/grafana/provisioning/datasources/prometheus.yml gives it this uid

_HITS = 'rag_cache_events_total{event="hits"}'
_LOOKUPS = 'rag_cache_events_total{event=~"hits|misses"}'


@dataclass(frozen=True)
class Panel:
    """One time-series panel: a title, what it answers, and (PromQL, legend) pairs."""

    title: str
    description: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    width: int = 12
    extra: dict[str, Any] = field(default_factory=dict)


PANELS: tuple[Panel, ...] = (
    Panel(
        "Hit ratio per cache and tier",
        "Share of lookups answered from this replica's memory and from Redis, per cache (1 = every lookup hit).",
        (
            (
                f'sum by (cache) (rate(rag_cache_events_total{{event="memory_hits"}}[1m])) '
                f"/ sum by (cache) (rate({_LOOKUPS}[1m]))",
                "{{cache}} memory",
            ),
            (
                f'sum by (cache) (rate(rag_cache_events_total{{event="redis_hits"}}[1m])) '
                f"/ sum by (cache) (rate({_LOOKUPS}[1m]))",
                "{{cache}} redis",
            ),
        ),
        unit="percentunit",
    ),
    Panel(
        "Cross-instance hits",
        "Hits on work another replica did: read from Redis (not in this replica's memory) or received while "
        "waiting on a peer's single-flight lease.",
        (
            (
                'sum by (cache) (rate(rag_cache_events_total{event=~"redis_hits|peer_hits"}[1m]))',
                "{{cache}} cross-instance",
            ),
            (f"sum by (cache) (rate({_HITS}[1m]))", "{{cache}} all hits"),
        ),
        unit="ops",
    ),
    Panel(
        "Upstream calls and calls saved",
        "Calls to the model per operation and outcome, beside the requests the cache answered without one.",
        (
            (
                "sum by (operation, outcome) (rate(rag_upstream_requests_total[1m]))",
                "upstream {{operation}} {{outcome}}",
            ),
            ('sum by (route) (rate(rag_cache_results_total{result=~"HIT|STALE"}[1m]))', "saved {{route}}"),
            ('sum(rate(rag_embedding_items_total{outcome="hit"}[1m]))', "saved embedding inputs"),
        ),
        unit="ops",
    ),
    Panel(
        "Model cost: paid and saved (last hour)",
        "Tokens the model served (paid) and the cache served instead (saved), priced with MODEL_PRICES.",
        (("sum by (model, source) (increase(rag_model_cost_usd_total[1h]))", "{{model}} {{source}}"),),
        unit="currencyUSD",
    ),
    Panel(
        "Request rate by route and outcome",
        "Answers per second by route template and X-Cache value (none: routes that are not cached).",
        (("sum by (route, cache) (rate(rag_http_request_duration_seconds_count[1m]))", "{{route}} {{cache}}"),),
        unit="reqps",
    ),
    Panel(
        "Latency p95 by route and outcome",
        "95th percentile of the time to answer, by route and X-Cache value.",
        (
            (
                "histogram_quantile(0.95, sum by (le, route, cache) "
                '(rate(rag_http_request_duration_seconds_bucket{route=~"/v1/.*"}[1m])))',
                "{{route}} {{cache}}",
            ),
        ),
        unit="s",
    ),
    Panel(
        "Responses by status",
        "Answers per second by route and HTTP status.",
        (("sum by (route, status) (rate(rag_http_requests_total[1m]))", "{{route}} {{status}}"),),
        unit="reqps",
    ),
    Panel(
        "Upstream latency p95",
        "95th percentile of the model's answer time, per operation.",
        (
            (
                "histogram_quantile(0.95, sum by (le, operation) (rate(rag_upstream_duration_seconds_bucket[1m])))",
                "{{operation}}",
            ),
        ),
        unit="s",
    ),
    Panel(
        "Breakers per replica",
        "Redis breaker per cache (1 open) and the model breaker (0 closed, 1 half-open, 2 open; 0 for a "
        "replica where no model ever failed).",
        (
            ("max by (instance, cache) (rag_cache_breaker_open)", "redis {{cache}} {{instance}}"),
            (
                'max by (instance) (rag_upstream_breaker_state) or on (instance) (0 * up{job="rag-api"})',
                "model {{instance}}",
            ),
        ),
    ),
    Panel(
        "Replicas: scraped and reaching Redis",
        "1 when Prometheus scraped the replica (up) and when the replica's last Redis INFO answered.",
        (
            ('up{job="rag-api"}', "scraped {{instance}}"),
            ("min by (instance) (rag_redis_up)", "redis reachable {{instance}}"),
        ),
    ),
    Panel(
        "Redis memory",
        "Redis used_memory and maxmemory (the server's own figures, the same from every replica).",
        (
            ('max(rag_redis_info{field="used_memory"})', "used"),
            ('max(rag_redis_info{field="maxmemory"})', "maxmemory"),
        ),
        unit="bytes",
    ),
    Panel(
        "Redis evictions and clients",
        "Keys Redis evicted per second (maxmemory reached) and its connected clients.",
        (
            ('max(deriv(rag_redis_info{field="evicted_keys"}[1m]))', "evicted keys/s"),
            ('max(rag_redis_info{field="connected_clients"})', "connected clients"),
        ),
    ),
    Panel(
        "Single-flight waits",
        "Requests that waited for an answer being computed: in this process (coalesced) or by another replica "
        "holding the lease (peer).",
        (
            ('sum by (cache) (rate(rag_cache_events_total{event="coalesced"}[1m]))', "{{cache}} coalesced"),
            ('sum by (cache) (rate(rag_cache_events_total{event="peer_hits"}[1m]))', "{{cache}} peer"),
        ),
        unit="ops",
    ),
    Panel(
        "Top schools by requests",
        "The ten busiest schools (labels bounded by METRICS_MAX_SCHOOLS; the rest count as 'other').",
        (("topk(10, sum by (school) (rate(rag_school_requests_total[1m])))", "school {{school}}"),),
        unit="reqps",
    ),
    Panel(
        "Memory tier per replica",
        "Bytes held by each replica's memory tier, per cache.",
        (('sum by (instance, cache) (rag_cache_memory{unit="bytes"})', "{{cache}} {{instance}}"),),
        unit="bytes",
    ),
    Panel(
        "Cache errors and fallbacks",
        "Redis errors, reads served from memory because Redis failed, and stale answers served on upstream failure.",
        (
            (
                'sum by (cache, event) (rate(rag_cache_events_total{event=~"errors|fallbacks|stale_served"}[1m]))',
                "{{cache}} {{event}}",
            ),
        ),
        unit="ops",
    ),
)


def dashboard() -> dict[str, Any]:
    """The dashboard as Grafana's JSON model (schemaVersion 39), two panels a row."""
    panels = []
    x = y = 0
    for number, panel in enumerate(PANELS, start=1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        datasource = {"type": "prometheus", "uid": DATASOURCE_UID}
        panels.append(
            {
                "id": number,
                "type": "timeseries",
                "title": panel.title,
                "description": panel.description,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
                "targets": [
                    {"refId": chr(ord("A") + i), "expr": expr, "legendFormat": legend, "datasource": datasource}
                    for i, (expr, legend) in enumerate(panel.queries)
                ],
                **panel.extra,
            }
        )
        x += panel.width
    return {
        "uid": "rag-cache",
        "title": "RAG cache API",
        "description": "Generated by monitoring/dashboard.py; edit PANELS there, not this file.",
        "tags": ["rag", "cache"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": False,
        "refresh": "10s",
        "time": {"from": "now-15m", "to": "now"},
        "panels": panels,
        "templating": {"list": []},
        "annotations": {"list": []},
    }


def rendered() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def queries() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel."""
    return [(panel.title, expr) for panel in PANELS for expr, _ in panel.queries]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the committed file is stale")
    args = parser.parse_args(argv)
    return write_or_check(DASHBOARD_FILE, rendered(), command="python -m monitoring.dashboard", check=args.check)


if __name__ == "__main__":
    sys.exit(main())
