"""The Grafana stand-in's server (see the Dockerfile: it checks provisioning files, it is not Grafana)."""

from __future__ import annotations

import base64
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

PROVISIONING = Path(os.environ.get("GF_PATHS_PROVISIONING", "/etc/grafana/provisioning"))


def admin_password() -> str:
    path = os.environ.get("GF_SECURITY_ADMIN_PASSWORD__FILE")
    password = Path(path).read_text().strip() if path else os.environ.get("GF_SECURITY_ADMIN_PASSWORD", "")
    if not password or password == "admin":
        sys.exit("grafana stand-in: no admin password (GF_SECURITY_ADMIN_PASSWORD__FILE), refusing the default")
    return password


def load() -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Datasources and dashboards by uid, or exit naming what is wrong."""
    sources: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "datasources").glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        assert doc.get("apiVersion") == 1, f"{path}: apiVersion must be 1"
        for source in doc.get("datasources", []):
            missing = {"name", "type", "uid", "url"} - source.keys()
            assert not missing, f"{path}: datasource without {missing}"
            sources[source["uid"]] = source
    dashboards: dict[str, dict[str, Any]] = {}
    for path in sorted((PROVISIONING / "dashboards").glob("*.y*ml")):
        doc = yaml.safe_load(path.read_text())
        assert doc.get("apiVersion") == 1, f"{path}: apiVersion must be 1"
        for provider in doc.get("providers", []):
            folder = Path(provider["options"]["path"])
            files = sorted(folder.glob("*.json"))
            assert files, f"{path}: provider {provider['name']} finds no dashboard in {folder}"
            for file in files:
                board = json.loads(file.read_text())
                for panel in board.get("panels", []):
                    for target in panel.get("targets", []):
                        uid = (target.get("datasource") or panel.get("datasource") or {}).get("uid")
                        assert uid in sources, f"{file}: panel {panel.get('title')!r} uses unknown datasource {uid}"
                dashboards[board["uid"]] = {
                    "dashboard": board,
                    "meta": {"provisioned": True, "folderTitle": provider.get("folder", "")},
                }
    return sources, dashboards


def main() -> None:
    password = admin_password()
    try:
        sources, dashboards = load()
    except (AssertionError, KeyError, OSError, ValueError) as exc:
        sys.exit(f"grafana stand-in: provisioning rejected: {exc}")
    print(f"grafana stand-in: {len(sources)} datasource(s), dashboards {sorted(dashboards)}", flush=True)
    expected = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/api/health":
                return self.answer(200, {"database": "ok", "version": "stand-in"})
            if self.headers.get("Authorization") != expected:
                return self.answer(401, {"message": "Unauthorized"})
            if path == "/api/search":
                return self.answer(
                    200,
                    [{"uid": u, "title": d["dashboard"]["title"], "type": "dash-db"} for u, d in dashboards.items()],
                )
            kind, _, uid = path.removeprefix("/api/").partition("/uid/")
            found = {"dashboards": dashboards, "datasources": sources}.get(kind, {}).get(uid)
            return self.answer(200, found) if found is not None else self.answer(404, {"message": "Not found"})

        def answer(self, status: int, body: object) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Grafana-Standin", "1")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    ThreadingHTTPServer(("0.0.0.0", 3000), Handler).serve_forever()


if __name__ == "__main__":
    main()
