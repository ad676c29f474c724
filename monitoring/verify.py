"""Ask a running Prometheus every dashboard query: `python -m monitoring.verify --prometheus URL`.

Prints each panel query with the number of series it returns (and their `instance` labels, where the query
keeps them); exits 1 when any query returns nothing. The integration tests call `run_queries` the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from monitoring.dashboard import queries

__all__ = ["Answer", "main", "query", "run_queries", "targets"]


@dataclass(frozen=True)
class Answer:
    panel: str
    expr: str
    series: list[dict[str, str]]

    @property
    def instances(self) -> set[str]:
        return {s["instance"] for s in self.series if "instance" in s}


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        body = json.loads(response.read())
    if body.get("status") != "success":
        raise RuntimeError(f"{url}: {body}")
    return body["data"]


def query(prometheus: str, expr: str) -> list[dict[str, str]]:
    """The label sets of an instant query's result."""
    data = _get(f"{prometheus}/api/v1/query?{urllib.parse.urlencode({'query': expr})}")
    return [item["metric"] for item in data["result"]]


def targets(prometheus: str) -> list[dict[str, Any]]:
    """Prometheus's active targets (labels, health, last error)."""
    return list(_get(f"{prometheus}/api/v1/targets")["activeTargets"])


def run_queries(prometheus: str) -> list[Answer]:
    return [Answer(panel, expr, query(prometheus, expr)) for panel, expr in queries()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run every dashboard query against a Prometheus")
    parser.add_argument("--prometheus", default="http://127.0.0.1:9090")
    args = parser.parse_args(argv)
    up = [t for t in targets(args.prometheus) if t["health"] == "up"]
    print(f"targets up: {len(up)} ({', '.join(sorted(t['labels']['instance'] for t in up))})")
    empty = 0
    for answer in run_queries(args.prometheus):
        empty += not answer.series
        where = f" instances={len(answer.instances)}" if answer.instances else ""
        print(f"{len(answer.series):3d} series{where:14s} {answer.panel}: {answer.expr}")
    print(f"{empty} queries without data")
    return 1 if empty else 0


if __name__ == "__main__":
    sys.exit(main())
