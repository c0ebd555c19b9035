"""A stock Flask/Werkzeug backend for the trap and differential tests.

Started as `python flask_app.py PORT ROUTES_JSON` (or env MTLSC_BACKEND_PORT / MTLSC_BACKEND_ROUTES).
ROUTES_JSON is a list of route specs in mtlsc's location form: `= /healthz` (exact), `/partner/`
(prefix ending in `/`), `/static` (segment prefix), `/` (everything). Each gets one handler,
registered the way a Flask developer writes it, so the framework's own path rules decide which
handler runs. Every handler answers 200 JSON saying which handler ran and what it received.
"""

from __future__ import annotations

import json
import os
import sys

from flask import Flask, jsonify, request
from werkzeug.serving import run_simple

METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
CATCH_ALL = "catch-all"


def canonical(spec: str) -> str:
    """`= /p` for an exact route, the bare path for a prefix (`^~ /p/` -> `/p/`)."""
    spec = spec.strip()
    if spec.startswith("="):
        return "= " + spec[1:].strip()
    return spec[2:].strip() if spec.startswith("^~") else spec


def flask_rules(spec: str) -> list[str]:
    """The URL rules a Flask developer writes for one route spec."""
    spec = canonical(spec)
    if spec.startswith("= "):
        return [spec[2:]]
    if spec == "/":
        return ["/", "/<path:rest>"]
    if spec.endswith("/"):
        return [spec, f"{spec}<path:rest>"]
    return [spec, f"{spec}/", f"{spec}/<path:rest>"]  # a segment: /static, /static/, /static/...


def _answer(handler: str):
    env = request.environ
    return jsonify({
        "framework": "flask",
        "handler": handler,
        "target": env.get("RAW_URI") or env.get("REQUEST_URI"),
        "path": request.path,
        "headers": [[k, v] for k, v in request.headers.items()],
    })


def make_app(specs: list[str]) -> Flask:
    # static_folder=None: Flask's own /static/<path:filename> route would shadow a policy's /static.
    app = Flask("mtlsc_flask_backend", static_folder=None)
    names = [canonical(s) for s in specs]
    if "/" not in names:
        names.append(CATCH_ALL)
    # Most specific first, as developers register them (and as the Express app does): Werkzeug
    # gives a URL both `= /p/` and `/p/` claim to the handler registered first.
    names.sort(key=lambda n: (0, -len(n)) if n.startswith("= ") else (3, 0) if n == CATCH_ALL
               else (2 if n == "/" else 1, -len(n)))
    for i, name in enumerate(names):
        rules = flask_rules("/") if name == CATCH_ALL else flask_rules(name)
        view = (lambda handler=name, **_: _answer(handler))
        for rule in rules:
            app.add_url_rule(rule, endpoint=f"h{i}", view_func=view, methods=METHODS)
    return app


def main(argv: list[str]) -> None:
    port = int(argv[1] if len(argv) > 1 else os.environ["MTLSC_BACKEND_PORT"])
    specs = json.loads(argv[2] if len(argv) > 2 else os.environ.get("MTLSC_BACKEND_ROUTES", "[]"))
    run_simple("127.0.0.1", port, make_app(specs), threaded=True, use_reloader=False, use_debugger=False)


if __name__ == "__main__":
    main(sys.argv)
