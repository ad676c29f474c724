"""`make bench`: runs the benchmark suites, prints figures and verdicts, writes reports/bench-*.json.

Usage: python bench/run.py [cache] [e2e]   (default: all)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import cache_bench
from bench._common import redis_server, write_report


def main(argv: list[str]) -> int:
    wanted = set(argv) or {"cache", "e2e"}
    ok = True
    if "cache" in wanted:
        with redis_server() as url:
            figures, passed = asyncio.run(cache_bench.run(url))
        print(f"  -> {write_report('cache', {**figures, 'passed': passed})}")
        ok &= passed
    if "e2e" in wanted and (Path(__file__).parent / "e2e_bench.py").exists():
        from bench import e2e_bench

        passed = e2e_bench.main()
        ok &= passed
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
