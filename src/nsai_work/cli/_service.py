"""``nsai-work server`` and ``nsai-work keys``: run the HTTP API, and manage its API keys."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Any

import msgspec

__all__ = ["add_commands"]

KEYS_ENV = "NSAI_WORK_KEYS"


def _keys_path(args: argparse.Namespace) -> str:
    path = args.keys or os.environ.get(KEYS_ENV)
    if path:
        return str(path)
    store = getattr(args, "store", None) or ""
    if store.startswith("sqlite://"):  # beside the database: work.db -> work.db.keys.json
        return store[len("sqlite://") :].split("?", 1)[0] + ".keys.json"
    raise SystemExit(
        f"nsai-work: where are the API keys? Give --keys PATH (or set {KEYS_ENV}); with a "
        f"sqlite:// store they default to <database>.keys.json"
    )


def _server(args: argparse.Namespace) -> int:
    from ..server import create_app, serve

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s"
    )
    keys = _keys_path(args)
    app = create_app(
        args.store,
        keys=keys,
        scheduler=True if args.scheduler else None,
        max_body_bytes=args.max_body_bytes,
        stop_timeout_s=args.stop_timeout,
        tracing=True if args.tracing else None,
    )
    service = app.state.service
    mode = "runs the scheduler" if service.runs_scheduler else "is a client of the scheduler"
    print(
        f"nsai-work server on http://{args.host}:{args.port} {mode} of {service.store_url}; "
        f"keys in {service.keys.where}",
        file=sys.stderr,
        flush=True,
    )
    if service.store_url == "memory://":
        print(
            "nsai-work server: memory:// keeps jobs in this process only; they are lost when "
            "it stops (use --store sqlite:///path/work.db to keep them)",
            file=sys.stderr,
            flush=True,
        )
    serve(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=args.proxy_headers,
        forwarded_allow_ips=args.forwarded_allow_ips,
        timeout_graceful_shutdown=int(args.stop_timeout),
    )
    return 0


def _show(key: Any, token: str | None, as_json: bool) -> None:
    data = msgspec.to_builtins(key)
    data.pop("secret_sha256", None)
    if token is not None:
        data["token"] = token
    if as_json:
        print(json.dumps(data))
        return
    owner = "admin" if key.admin else f"tenant {key.tenant_id}"
    state = f"revoked {key.revoked_at:%Y-%m-%d %H:%M}" if key.revoked_at else "live"
    rate = f", {key.rate}/s" if key.rate is not None else ""
    print(f"{key.id}  {owner}{rate}  {state}  {key.name or ''}".rstrip())
    if token is not None:
        print(f"token (shown once, keep it): {token}")


def _keys(args: argparse.Namespace) -> int:
    from .._errors import WorkError
    from ..server import KeyRing

    ring = KeyRing(_keys_path(args))
    try:
        if args.action == "create":
            key, token = ring.create(
                tenant_id=args.tenant,
                admin=args.admin,
                name=args.name,
                rate=args.rate,
                burst=args.burst,
            )
            _show(key, token, args.json)
        elif args.action == "list":
            for key in ring.list():
                _show(key, None, args.json)
        else:
            _show(ring.revoke(args.key_id), None, args.json)
    except WorkError as exc:
        print(f"nsai-work keys: {exc}", file=sys.stderr)
        return 1
    return 0


def add_commands(sub: Any) -> None:
    """Add ``server`` and ``keys`` to the command's subparsers."""
    server = sub.add_parser("server", help="serve the HTTP API")
    server.add_argument("--store", default="memory://", help="the store's URL (memory://)")
    server.add_argument(
        "--scheduler",
        action="store_true",
        help="run the scheduler here (always so for memory://); without it the server is a "
        "client of the scheduler that serves the store",
    )
    server.add_argument("--host", default="127.0.0.1")
    server.add_argument("--port", type=int, default=8080)
    server.add_argument("--keys", help=f"the API keys file (or ${KEYS_ENV})")
    server.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    server.add_argument(
        "--stop-timeout", type=float, default=30.0, help="seconds running jobs get at SIGTERM"
    )
    server.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    server.add_argument(
        "--proxy-headers", action="store_true", help="trust X-Forwarded-* from a proxy"
    )
    server.add_argument("--forwarded-allow-ips", default="127.0.0.1")
    server.add_argument(
        "--tracing",
        action="store_true",
        help="OpenTelemetry spans of submits and attempts, to the global tracer provider (set "
        "it up with opentelemetry-instrument, say; needs nsai-work[otel])",
    )
    server.set_defaults(run=_server)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--keys", help=f"the API keys file (or ${KEYS_ENV})")
    common.add_argument("--store", help="a sqlite:// store: its keys file is beside it")
    common.add_argument("--json", action="store_true", help="one JSON object per key")
    keys = sub.add_parser("keys", help="create, list or revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", parents=[common], help="a new key (its token is shown once)"
    )
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--tenant", help="the tenant the key is for")
    who.add_argument("--admin", action="store_true", help="full rights over every tenant")
    create.add_argument("--name", help="a note: whose key it is")
    create.add_argument("--rate", type=float, help="requests per second it may make")
    create.add_argument("--burst", type=int, help="requests at once after a quiet spell")
    actions.add_parser("list", parents=[common], help="every key (no tokens)")
    revoke = actions.add_parser("revoke", parents=[common], help="refuse a key from now on")
    revoke.add_argument("key_id")
    keys.set_defaults(run=_keys)
