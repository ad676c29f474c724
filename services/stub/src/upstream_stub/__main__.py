"""`python -m upstream_stub --host 127.0.0.1 --port 8090`: run the stub under uvicorn."""

from __future__ import annotations

import argparse
import os

import uvicorn

from upstream_stub.app import StubState, create_app


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (defaults from STUB_* variables) and serve until interrupted."""
    parser = argparse.ArgumentParser(prog="upstream-stub", description=__doc__)
    parser.add_argument("--host", default=os.environ.get("STUB_HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("STUB_PORT", "8090")))
    parser.add_argument("--latency-ms", type=float, default=float(os.environ.get("STUB_LATENCY_MS", "150")))
    parser.add_argument("--dim", type=int, default=int(os.environ.get("STUB_DIM", "1536")))
    parser.add_argument("--log-level", default=os.environ.get("STUB_LOG_LEVEL", "warning"))
    args = parser.parse_args(argv)
    if args.dim <= 0 or args.latency_ms < 0:
        parser.error("--dim must be positive and --latency-ms not negative")
    app = create_app(StubState(latency_ms=args.latency_ms, dim=args.dim))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)


if __name__ == "__main__":
    main()
