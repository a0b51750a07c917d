"""The ``nsai-work`` command.

nsai-work version            print the version
nsai-work schema [--write D] print (or write under D) the JSON Schema of the Job IR (and the
                             HTTP API's OpenAPI document, schema/openapi.json)
nsai-work demo [options]     run the multi-tenant demo (what `make demo` runs; --help)
nsai-work server [--store URL] [--scheduler] [--host H] [--port P] [--keys FILE]
                             serve the HTTP API (docs/service.md)
nsai-work keys create|list|revoke ...   the API keys of a server
nsai-work submit|get|list|cancel|retry|wait|stats|tools|tenants ... [--url U | --store S] [--json]
                             the operators' commands, on a server or a store
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

__all__ = ["main", "render_schemas", "schemas"]

REGENERATE = "run `make schema` (or `nsai-work schema --write schema`) and commit the result"


def schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schemas generated from the IR types, by file name.

    Descriptions are docstrings cleaned with ``inspect.cleandoc``: msgspec 0.23 started to
    dedent them itself and earlier releases did not, so cleaning them here gives the same
    text on every msgspec release the pins allow.
    """
    from .._ir import Job, Pool

    return {
        "job.schema.json": _clean_descriptions(msgspec.json.schema(Job)),
        "pool.schema.json": _clean_descriptions(msgspec.json.schema(Pool)),
    }


def render_schemas() -> dict[str, str]:
    """The text of each schema file, by file name, as ``nsai-work schema --write`` writes it."""
    return {
        name: json.dumps(schema, indent=2, sort_keys=True) + "\n"
        for name, schema in schemas().items()
    }


def _clean_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def _schema(args: argparse.Namespace) -> int:
    rendered = render_schemas()
    if args.write is None:
        sys.stdout.write(rendered["job.schema.json"])
        return 0
    target = Path(args.write)
    target.mkdir(parents=True, exist_ok=True)
    for name, text in rendered.items():
        (target / name).write_text(text)
        print(f"wrote {target / name}")
    try:
        from ..server._openapi import render
    except ImportError:  # the [server] extra is not installed: no API to describe
        return 0
    (target / "openapi.json").write_text(render())
    print(f"wrote {target / 'openapi.json'}")
    return 0


def _version(args: argparse.Namespace) -> int:
    from .. import __version__

    print(f"nsai-work {__version__}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ..demo import run, settings

    return run(settings(args, args.demo_parser))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``nsai-work`` command."""
    parser = argparse.ArgumentParser(prog="nsai-work", description="The nsai-work job scheduler.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("version", help="print the version").set_defaults(run=_version)
    schema = sub.add_parser("schema", help="print or write the Job IR's JSON Schema")
    schema.add_argument("--write", metavar="DIR", help="write schema files under DIR")
    schema.set_defaults(run=_schema)
    demo = sub.add_parser("demo", help="run the multi-tenant demo (what `make demo` runs)")
    from ..demo import add_arguments

    add_arguments(demo)
    demo.set_defaults(run=_demo, demo_parser=demo)
    from . import _jobs, _service

    _service.add_commands(sub)
    _jobs.add_commands(sub)
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
