#!/usr/bin/env bash
# Re-resolves the lock files from pyproject.toml: exact versions with the sha256 of every file, for pip's
# --require-hashes (pip-tools' format, resolved by `uv pip compile`; see README "Dependencies").
#   api.lock   the API's runtime dependencies      (services/api/Dockerfile)
#   stub.lock  the stub's, at the API's versions   (services/stub/Dockerfile)
#   dev.lock   runtime + test, ops and bench extras (make setup: tests, local runtime, loadtest, bench)
set -euo pipefail
uv=${1:-uv}
cd "$(dirname "$0")/.."
common=(--quiet --universal --python-version 3.11 --generate-hashes --no-header)
"$uv" pip compile "${common[@]}" pyproject.toml -o requirements/api.lock
"$uv" pip compile "${common[@]}" requirements/stub.in -c requirements/api.lock -o requirements/stub.lock
"$uv" pip compile "${common[@]}" pyproject.toml --extra test --extra ops --extra bench -o requirements/dev.lock
wc -l requirements/*.lock
