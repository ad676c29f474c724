"""`make bench`: runs the benchmark suites, prints figures and verdicts, writes reports/bench-*.json.

Usage: python -m bench.run [cache] [e2e]   (default: all)
"""

from __future__ import annotations

import asyncio
import sys

from bench import cache_bench, e2e_bench
from bench._common import BenchError, redis_server, write_report
from deploy.errors import StackError


def main(argv: list[str]) -> int:
    try:
        return 0 if run(set(argv) or {"cache", "e2e"}) else 1
    except (BenchError, StackError) as error:
        print(f"bench: {error}", file=sys.stderr)
        print(getattr(error, "output", ""), file=sys.stderr)
        return 2


def run(wanted: set[str]) -> bool:
    ok = True
    if "cache" in wanted:
        with redis_server() as url:
            figures, passed = asyncio.run(cache_bench.run(url))
        print(f"  -> {write_report('cache', {**figures, 'passed': passed})}")
        ok &= passed
    if "e2e" in wanted:
        passed = e2e_bench.main()
        ok &= passed
    return ok


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
