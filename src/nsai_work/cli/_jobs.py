"""The operators' commands on jobs: ``submit``, ``get``, ``list``, ``cancel``, ``retry``,
``wait``, ``stats``, ``tools``, ``tenants``; and ``schedules`` (list, pause, resume, remove
cron schedules by name).

Each works against a server (``--url`` or ``NSAI_WORK_URL``, the key from ``NSAI_WORK_API_KEY``
or ``--api-key``) or directly on a store a scheduler serves (``--store``), through the one
client (``work.connect``). Output is a table for people, ``--json`` for scripts (one JSON
value: a job, or a list of jobs); an error is one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = ["add_commands"]

URL_ENV = "NSAI_WORK_URL"
KEY_ENV = "NSAI_WORK_API_KEY"


def _connect(args: argparse.Namespace) -> Any:
    import nsai_work as work

    if args.store:
        return work.connect(store=args.store)
    url = args.url or os.environ.get(URL_ENV)
    if not url:
        raise work.ConfigurationError(
            f"where are the jobs? Give --url (or set {URL_ENV}) for a server, or --store URL"
        )
    return work.connect(url, api_key=args.api_key or os.environ.get(KEY_ENV))


def _print(value: Any, as_json: bool) -> None:
    if as_json:
        print(msgspec.json.encode(value).decode())
        return
    from .._ir import Job

    jobs = value if isinstance(value, list) else [value]
    if jobs and all(isinstance(job, Job) for job in jobs):
        from rich.console import Console
        from rich.table import Table

        table = Table("id", "tenant", "namespace", "kind", "priority", "status", "result / error")
        for job in jobs:
            outcome = job.error.message if job.error is not None else job.result
            table.add_row(
                job.id,
                job.tenant_id,
                job.namespace,
                job.kind,
                str(job.priority),
                str(job.status),
                "" if outcome is None else json.dumps(outcome)[:60],
            )
        Console().print(table)
        return
    from .._schedule import Schedule

    if jobs and all(isinstance(one, Schedule) for one in jobs):
        _print_schedules(jobs)
        return
    print(json.dumps(msgspec.to_builtins(value), indent=2))


def _print_schedules(schedules: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("tenant", "name", "cron", "tz", "paused", "last fire", "next fire", "kind")
    for one in schedules:
        table.add_row(
            one.tenant_id,
            one.name,
            one.cron,
            one.tz,
            "yes" if one.paused else "no",
            "" if one.last_fire is None else one.last_fire.isoformat(),
            "" if one.next_fire is None else one.next_fire.isoformat(),
            one.template.kind,
        )
    Console().print(table)


def _schedules(client: Any, args: argparse.Namespace) -> Any:
    """``schedules`` (list), or ``schedules pause|resume|remove NAME``."""
    import nsai_work as work

    if args.action == "list":
        if args.name is not None:
            raise work.ValidationError("schedules list takes no name", path="$.name")
        return client.schedules(args.tenant)
    if args.name is None:
        raise work.ValidationError(f"schedules {args.action} NAME: which schedule", path="$.name")
    verb = getattr(client, f"{args.action}_schedule")
    return verb(args.name, **_tenant(args))


def _job_from(args: argparse.Namespace) -> Any:
    import nsai_work as work

    if args.job is not None:
        text = sys.stdin.read() if args.job == "-" else args.job
        return msgspec.json.decode(text.encode(), type=work.Job)
    if args.kind is None or args.tenant is None:
        raise work.ValidationError(
            "submit takes a job as JSON (an argument, or - for stdin), or --kind and --tenant",
            path="$.kind" if args.kind is None else "$.tenant_id",
        )
    fields: dict[str, Any] = {"kind": args.kind, "tenant_id": args.tenant}
    if args.payload is not None:
        fields["payload"] = json.loads(args.payload)
    if args.namespace:
        fields["namespace"] = args.namespace
    if args.priority:
        fields["priority"] = args.priority
    return msgspec.convert(fields, work.Job)


def _run(action: Callable[[Any, argparse.Namespace], Any]) -> Callable[[argparse.Namespace], int]:
    def command(args: argparse.Namespace) -> int:
        import nsai_work as work

        try:
            with _connect(args) as client:
                _print(action(client, args), args.json)
        except (work.WorkError, msgspec.MsgspecError, ValueError, AttributeError) as exc:
            print(f"nsai-work {args.command}: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        return 0

    return command


def _tenant(args: argparse.Namespace) -> dict[str, Any]:
    return {} if args.tenant is None else {"tenant_id": args.tenant}


def add_commands(sub: Any) -> None:
    """Add the commands on jobs to the command's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help=f"the server (or ${URL_ENV})")
    common.add_argument("--api-key", help=f"the key (better: ${KEY_ENV})")
    common.add_argument("--store", help="work on a store's jobs directly, not through a server")
    common.add_argument("--json", action="store_true", help="JSON output, for scripts")

    def command(name: str, text: str, action: Callable[[Any, argparse.Namespace], Any]) -> Any:
        parser = sub.add_parser(name, parents=[common], help=text)
        parser.set_defaults(run=_run(action))
        return parser

    submit = command("submit", "submit a job", lambda c, a: c.submit(_job_from(a)))
    submit.add_argument("job", nargs="?", help="the job as JSON, or - to read it from stdin")
    submit.add_argument("--kind")
    submit.add_argument("--tenant")
    submit.add_argument("--namespace")
    submit.add_argument("--priority", choices=["realtime", "interactive", "batch", "offline"])
    submit.add_argument("--payload", help="the payload as JSON")

    for name, text, verb in (
        ("get", "a job as it is now", lambda c, a: c.get(a.job_id, **_tenant(a))),
        ("retry", "submit a copy of a finished job", lambda c, a: c.retry(a.job_id, **_tenant(a))),
    ):
        parser = command(name, text, verb)
        parser.add_argument("job_id")
        parser.add_argument("--tenant", help="whose job (admin keys, and ids two tenants use)")

    cancel = command(
        "cancel", "cancel a job", lambda c, a: c.cancel(a.job_id, a.reason, **_tenant(a))
    )
    cancel.add_argument("job_id")
    cancel.add_argument("--reason")
    cancel.add_argument("--tenant")

    wait = command(
        "wait",
        "wait until jobs end (prints each as it ends)",
        lambda c, a: list(c.as_completed(a.job_ids, a.timeout, **_tenant(a))),
    )
    wait.add_argument("job_ids", nargs="+")
    wait.add_argument("--timeout", type=float)
    wait.add_argument("--tenant")

    listing = command(
        "list",
        "a page of a tenant's jobs, newest first",
        lambda c, a: list(
            c.list(
                a.tenant,
                namespace=a.namespace,
                status=a.status,
                kind=a.kind,
                limit=a.limit,
                cursor=a.cursor,
            )
        ),
    )
    listing.add_argument("--tenant")
    listing.add_argument("--namespace")
    listing.add_argument("--status")
    listing.add_argument("--kind")
    listing.add_argument("--limit", type=int, default=100)
    listing.add_argument("--cursor")

    schedules = command(
        "schedules",
        "list cron schedules, or pause, resume or remove one by name",
        _schedules,
    )
    schedules.add_argument(
        "action", nargs="?", default="list", choices=["list", "pause", "resume", "remove"]
    )
    schedules.add_argument("name", nargs="?")
    schedules.add_argument("--tenant", help="whose schedules (admin keys)")

    command("stats", "the scheduler's stats (a tenant key: its own)", lambda c, a: c.stats())
    command("tools", "the registered ALTAR tools", lambda c, a: c.request("GET", "/tools"))
    command("tenants", "every tenant (admin)", lambda c, a: c.request("GET", "/tenants"))
