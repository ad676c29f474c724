"""How long after `redis-start` every replica of the running stack reports `healthy` again.

Run against a running scaled stack (`make up-scaled`): `.venv/bin/python -m bench.redis_recovery [trials]`.
Each trial kills Redis, sends requests to every replica (which opens their breakers, as traffic would),
starts Redis, and polls every replica's /cache/health until all say healthy (at most 5 s). The requests use
a tenant key of the running stack's own configuration (`.env` or the demo keys).
"""

from __future__ import annotations

import sys
import time

import httpx

from deploy.client import StackClient
from deploy.errors import StackError


def main(trials: int) -> int:
    stack = StackClient()
    info = stack.info()
    replicas: list[str] = info["replica_urls"] or [info["api_url"]]
    tenant = next(iter(info["keys"]["tenants"]))
    headers = {"Authorization": f"Bearer {tenant}"}
    with httpx.Client(timeout=5) as client:

        def status(url: str) -> str:
            return str(client.get(f"{url}/cache/health").json()["status"])

        took = []
        for trial in range(trials):
            stack.check("redis-kill")
            for url in replicas:
                for i in range(3):
                    text = f"recovery {trial}-{i}-{time.time()}"
                    client.post(f"{url}/v1/embeddings", headers=headers, json={"model": "m", "input": text})
                    client.post(
                        f"{url}/v1/chat/completions",
                        headers=headers,
                        json={"model": "m", "messages": [{"role": "user", "content": text}]},
                    ).raise_for_status()
            if any(status(url) != "degraded" for url in replicas):
                print("a replica did not report degraded while Redis was down", file=sys.stderr)
                return 1
            stack.check("redis-start")
            started, pending = time.monotonic(), set(replicas)
            while pending and time.monotonic() - started < 5:
                pending = {url for url in pending if status(url) != "healthy"}
            if pending:
                print(f"still not healthy after 5 s: {sorted(pending)}", file=sys.stderr)
                return 1
            took.append(time.monotonic() - started)
    print(f"every replica healthy after redis-start returned: {', '.join(f'{t:.3f} s' for t in took)}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(int(sys.argv[1]) if len(sys.argv) > 1 else 3))
    except StackError as error:
        sys.exit(f"redis_recovery: {error}\n{getattr(error, 'output', '')}")
