"""Validation at the edge: a job entering the scheduler, a result leaving a handler, the structs
of the configuration.

A submitted job is checked once here and then trusted: the fields the scheduler owns are at
their defaults (one tuple comparison), its payload and metadata must be JSON (str keys; str,
int, float, bool, None, lists; finite floats), every field must satisfy its type's constraints
(a round trip through the one reused msgspec decoder, which also gives the scheduler a private
copy the caller can no longer mutate), its kind, tenant id and namespace are identifiers (one
regex call), and the rules its fields' types do not say hold (``_job_rules``: among them,
fields whose behaviour is not built yet are refused rather than ignored). What the round trip
would lose or choke on is named by its path instead: NaN and infinity (JSON has neither:
msgspec writes null, which reads back as "unset") and lone surrogates (not UTF-8). The search
for the offending field only runs once something is wrong.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any, Final, TypeVar

import msgspec

from ._errors import ValidationError
from ._ir import (
    DEFAULT_RESOURCES,
    IDENTIFIER_PATTERN,
    LOCAL_ACTOR,
    Actor,
    Audit,
    Backoff,
    Job,
    Pool,
    Priority,
    Resources,
    Status,
    Tenant,
    is_identifier,
    job_decoder,
    json_encoder,
    utc_now,
)
from ._job_rules import check_rules

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "SCHEDULER_OWNED",
    "check_identifier",
    "check_json",
    "find_non_json",
    "find_unencodable",
    "from_msgspec_error",
    "is_utf8",
    "normalize_result",
    "refuse_unencodable",
    "retry_copy",
    "validate_new_job",
    "validate_struct",
]

S = TypeVar("S", bound=msgspec.Struct)

_MAX_DEPTH: Final = 64
#: The largest JSON a job's payload (and its metadata) may encode to, unless configured.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1_048_576

# The three identifiers of a job in one regex call (none may contain a newline): cheaper than
# three calls on the hot path.
_ONE_IDENTIFIER: Final = IDENTIFIER_PATTERN[1:-1]
_THREE_IDENTIFIERS: Final = re.compile(
    rf"{_ONE_IDENTIFIER}\n{_ONE_IDENTIFIER}\n{_ONE_IDENTIFIER}"
).fullmatch
_NOT_IDENTIFIER_CHAR: Final = re.compile(r"[^A-Za-z0-9._:@-]")
_IDENTIFIER_RULE: Final = (
    "1 to 128 characters: ASCII letters, digits and . _ : @ -, starting with a letter or digit"
)


def check_status(value: object) -> Status:
    """A job status given by a caller (a ``Status`` or its string value), or a
    ``ValidationError`` at ``$.status`` listing the statuses."""
    try:
        return Status(value)  # type: ignore[arg-type]  # (any value: ValueError below)
    except ValueError:
        raise ValidationError(
            f"unknown status {value!r}; one of {[s.value for s in Status]}", path="$.status"
        ) from None


def check_identifier(value: object, path: str, *, what: str, index: int | None = None) -> None:
    """Raise ``ValidationError`` at ``path`` unless ``value`` follows ``IDENTIFIER_PATTERN``
    (``what`` names the value in the message: "a tenant id", "a kind" ...)."""
    if is_identifier(value):
        return
    raise ValidationError(
        f"{what} is an identifier, {_IDENTIFIER_RULE}; found {_shown(value)} "
        f"({_identifier_problem(value)}){_identifier_fix(value)}",
        path=path,
        index=index,
    )


def _shown(value: object, limit: int = 60) -> str:
    text = repr(value)  # repr escapes newlines, escapes and lone surrogates: safe in a message
    return text if len(text) <= limit else f"{text[: limit - 5]}...{text[-2:]}"


def _identifier_problem(value: object) -> str:
    if not isinstance(value, str):
        return f"not a str but {type(value).__name__}"
    if not value:
        return "empty"
    if len(value) > 128:
        return f"{len(value)} characters"
    bad = _NOT_IDENTIFIER_CHAR.search(value)
    if bad is not None:
        return f"{_shown(bad.group())} at position {bad.start()}"
    return f"it starts with {value[0]!r}"


def _identifier_fix(value: object) -> str:
    if not isinstance(value, str) or not value:
        return ""
    suggestion = _NOT_IDENTIFIER_CHAR.sub("-", value).lstrip("._:@-")[:128]
    return f" - rename it, e.g. {suggestion!r}" if is_identifier(suggestion) else " - rename it"


_IDENTIFIER_FIELDS: Final = ("$.kind", "$.tenant_id", "$.namespace")


def _refuse_identifiers(job: Job, index: int | None) -> None:
    check_identifier(job.kind, "$.kind", what="a kind", index=index)
    check_identifier(job.tenant_id, "$.tenant_id", what="a tenant id", index=index)
    check_identifier(job.namespace, "$.namespace", what="a namespace", index=index)


#: Job fields the scheduler owns: everything below the "set by the scheduler" line. A new job
#: leaves them at their defaults; one comparison of a tuple checks all of them.
_OWNED_START: Final = Job.__struct_fields__.index("status")
SCHEDULER_OWNED: Final = Job.__struct_fields__[_OWNED_START:]
_OWNED_DEFAULTS: Final = msgspec.structs.astuple(Job(kind="k", tenant_id="t"))[_OWNED_START:]
_astuple: Final = msgspec.structs.astuple
#: What ``retry(job_id)`` copies: the caller's fields, but not ``id`` and ``created_at``.
_RETRIED_FIELDS: Final = tuple(
    name for name in Job.__struct_fields__[:_OWNED_START] if name not in ("id", "created_at")
)
#: The copies ``retry_copy`` is submitting (by object id): the only new jobs that may carry
#: ``retry_of``.
_RETRY_COPIES: Final[dict[int, Job]] = {}


@contextlib.contextmanager
def retry_copy(job: Job, actor: Actor = LOCAL_ACTOR) -> Iterator[Job]:
    """The new Job ``retry(job_id)`` submits for the finished ``job``: its caller's fields, a new
    id, ``retry_of`` = its id, and the ``Audit`` of the retry by ``actor``. Inside the block
    ``validate_new_job`` lets this one object carry ``retry_of`` and ``audit`` (the scheduler
    set them, from a job the caller may see); every other check applies as to any job."""
    record = Audit(action="retry", by=actor[0], key_name=actor[1], at=utc_now())
    copy = Job(
        **{name: getattr(job, name) for name in _RETRIED_FIELDS},
        retry_of=job.id,
        audit=(record,),
    )
    _RETRY_COPIES[id(copy)] = copy
    try:
        yield copy
    finally:
        del _RETRY_COPIES[id(copy)]


def _refuse_owned(job: Job, index: int | None) -> None:
    """Name the first field the scheduler owns that ``job`` sets (``retry_of`` on a retry copy is
    the scheduler's own)."""
    retried = _RETRY_COPIES.get(id(job)) is job
    for name, default in zip(SCHEDULER_OWNED, _OWNED_DEFAULTS, strict=True):
        value = getattr(job, name)
        if value is default or (retried and name in ("retry_of", "audit")):
            continue
        try:
            same = bool(value == default)
        except Exception:  # an object whose == raises or is ambiguous (an array ...)
            same = False
        if same:
            continue
        if name == "status":
            hint = " (a new job starts pending; to run a finished job again, use retry(job_id))"
        elif name == "retry_of":
            hint = " (retry(job_id) sets it when it copies a finished job: call that instead)"
        else:
            hint = ""
        raise ValidationError(
            f"{name} is set by the scheduler: a new job leaves it at its default "
            f"({default!r}); found {_shown(value)} - remove it{hint}",
            path=f"$.{name}",
            index=index,
        )


def find_non_json(value: Any) -> tuple[str, str] | None:
    """Where ``value`` stops being JSON: (``$.path``, what was found), or None if it is JSON."""
    trail: list[str] = []
    found = _walk(value, trail, 0)
    if found is None:
        return None
    return "$" + "".join(reversed(trail)), found


def _walk(value: Any, trail: list[str], depth: int) -> str | None:
    if value is None or isinstance(value, str | bool | int):
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"the non-finite float {value!r}"
    if depth > _MAX_DEPTH:
        return f"nesting deeper than {_MAX_DEPTH} levels"
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                trail.append(f"[{key!r}]")
                return f"a key of type {type(key).__name__} (JSON object keys are strings)"
            found = _walk(item, trail, depth + 1)
            if found is not None:
                trail.append(f".{key}" if key.isidentifier() else f"[{key!r}]")
                return found
        return None
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            found = _walk(item, trail, depth + 1)
            if found is not None:
                trail.append(f"[{index}]")
                return found
        return None
    return f"a value of type {type(value).__name__}"


def find_unencodable(value: Any) -> tuple[str, str, str] | None:
    """Where ``value`` (a Struct, or dicts, lists and scalars) holds what JSON cannot carry
    faithfully: a non-finite float (msgspec writes NaN and infinity as null, so a round trip
    would unset the field) or a str with a lone surrogate (not encodable as UTF-8), as a value or
    a key. Returns (``$.path``, ``"non-finite"`` or ``"surrogate"``, what was found), or None.
    Only slow paths call it: after an error, to name the field."""
    trail: list[str] = []
    found = _walk_unencodable(value, trail, 0)
    if found is None:
        return None
    return ("$" + "".join(reversed(trail)), *found)


def _walk_unencodable(value: Any, trail: list[str], depth: int) -> tuple[str, str] | None:
    if isinstance(value, str):
        return None if is_utf8(value) else ("surrogate", _surrogate_in(value))
    if isinstance(value, float):
        return None if math.isfinite(value) else ("non-finite", repr(value))
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, msgspec.Struct):
        for name in value.__struct_fields__:
            found = _walk_unencodable(getattr(value, name), trail, depth + 1)
            if found is not None:
                trail.append(f".{name}")
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and not is_utf8(key):
                found = ("surrogate", f"{_surrogate_in(key)} (a key)")
            else:
                found = _walk_unencodable(item, trail, depth + 1)
            if found is not None:
                trail.append(_key_step(key))
                return found
    elif isinstance(value, list | tuple):
        for position, item in enumerate(value):
            found = _walk_unencodable(item, trail, depth + 1)
            if found is not None:
                trail.append(f"[{position}]")
                return found
    return None


def _key_step(key: object) -> str:
    return f".{key}" if isinstance(key, str) and key.isidentifier() else f"[{key!r}]"


def is_utf8(text: str) -> bool:
    """Whether UTF-8 can encode ``text`` (it holds no lone surrogate)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _surrogate_in(text: str) -> str:
    position = next(i for i, char in enumerate(text) if "\ud800" <= char <= "\udfff")
    return f"a lone surrogate {text[position]!r} at position {position} of {_shown(text)}"


def refuse_unencodable(value: Any, path: str = "$", index: int | None = None) -> None:
    """Raise ``ValidationError`` naming the first non-finite number or lone surrogate in
    ``value`` (``path`` replaces its ``$``); return if there is none."""
    found = find_unencodable(value)
    if found is None:
        return
    inner, kind, what = found
    where = path + inner[1:]
    if kind == "non-finite":
        raise ValidationError(
            f"expected a finite number, found {what} (NaN and infinity are refused everywhere: "
            f"JSON would write them as null, which means unset) - give a finite number or leave "
            f"the field unset",
            path=where,
            index=index,
        )
    raise ValidationError(
        f"text must be valid Unicode (it is stored and sent as UTF-8); found {what} - remove it, "
        f"or decode the bytes it came from with errors='replace'",
        path=where,
        index=index,
    )


def check_json(value: Any, path: str, *, what: str, index: int | None = None) -> None:
    """Raise ``ValidationError`` at ``path`` (plus the inner path) unless ``value`` is JSON."""
    found = find_non_json(value)
    if found is not None:
        inner, thing = found
        raise ValidationError(
            f"{what} must be JSON-encodable (objects with string keys, arrays, strings, finite "
            f"numbers, booleans, null); found {thing}",
            path=path + inner[1:],
            index=index,
        )


#: The enum of each field that holds one (by the field's name), to list the allowed values.
_ENUM_FIELDS: Final = {
    "priority": Priority,
    "backoff": Backoff,
    "status": Status,
    "min_share": Priority,  # PriorityGuard's keys
}


def from_msgspec_error(
    error: msgspec.ValidationError, index: int | None = None, prefix: str = "$"
) -> ValidationError:
    """Turn msgspec's "rule - at `$.path`" message into our ValidationError (``prefix``
    replaces the leading ``$`` when the value sits inside something larger). An invalid enum
    value gets the list of allowed ones."""
    text = str(error)
    rule, sep, where = text.rpartition(" - at `")
    if not sep:
        return ValidationError(text, path=prefix, index=index)
    where = where.rstrip("`")
    if "` in `" in where:  # "key` in `$.gpus": the rule is about a key of that object
        what, _, where = where.partition("` in `")
        rule = f"{rule} (in a {what})"
    if rule.startswith("Invalid enum value"):
        enum = _ENUM_FIELDS.get(where.rpartition(".")[2].partition("[")[0])
        if enum is not None:
            allowed = ", ".join(repr(member.value) for member in enum)
            rule = f"{rule}; expected one of {allowed}"
    return ValidationError(rule, path=prefix + where[1:], index=index)


def validate_struct(value: object, kind: type[S], path: str = "$", *, check_id: bool = True) -> S:
    """A validated copy of a Struct (given as itself or as a dict), e.g. a ``Tenant``.

    Identifiers are checked too: a Tenant's id (unless ``check_id`` is False: the id of
    ``default_tenant`` is a placeholder) and namespaces, a Pool's name."""
    if not isinstance(value, kind | dict):
        raise ValidationError(
            f"expected a {kind.__name__} (or a dict of its fields), got {type(value).__name__}",
            path=path,
        )
    try:
        checked = msgspec.convert(msgspec.to_builtins(value), kind)
    except msgspec.ValidationError as exc:
        refuse_unencodable(value, path)  # NaN fails "<= bound": say it is not a number
        raise from_msgspec_error(exc, prefix=path) from None
    except TypeError as exc:
        raise ValidationError(f"cannot be read as a {kind.__name__}: {exc}", path=path) from None
    try:
        json_encoder.encode(checked)
    except UnicodeEncodeError:
        refuse_unencodable(checked, path)
        raise
    if isinstance(checked, Tenant):
        if check_id:
            check_identifier(checked.id, f"{path}.id", what="a tenant id")
        for namespace in checked.namespaces:
            check_identifier(namespace, f"{path}.namespaces", what="a namespace")
    elif isinstance(checked, Pool):
        check_identifier(checked.name, f"{path}.name", what="a pool name")
    return checked


def validate_new_job(
    job: object, index: int | None = None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
) -> Job:
    """Check a job offered to ``submit`` and return the scheduler's private, validated copy.
    Its payload, and its metadata, may each encode to at most ``max_payload_bytes`` of JSON."""
    if type(job) is not Job:
        raise ValidationError(
            f"expected a work.Job, got {type(job).__name__}; build one with "
            f"work.Job(kind=..., tenant_id=...)",
            index=index,
        )
    try:
        untouched = _astuple(job)[_OWNED_START:] == _OWNED_DEFAULTS
    except Exception:  # a scheduler-owned field holds an object whose == raises
        untouched = False
    if not untouched:
        _refuse_owned(job, index)
    if job.payload:
        check_json(job.payload, "$.payload", what="the payload", index=index)
    if job.metadata:
        check_json(job.metadata, "$.metadata", what="metadata", index=index)
    resources = job.resources
    if resources is not DEFAULT_RESOURCES:
        # One sum: NaN or infinity in any of the four makes it non-finite (then find which).
        try:
            finite = math.isfinite(
                (resources.cpu or 0.0)
                + (resources.memory_mb or 0)
                + (resources.timeout_ms or 0)
                + (resources.max_cost_usd or 0.0)
            )
        except (TypeError, OverflowError):  # a str, a huge int: the decoder names the field
            finite = True
        if not finite:
            _refuse_lost_numbers(resources, index)
    try:
        encoded = json_encoder.encode(job)
        if len(encoded) > max_payload_bytes:  # (only then is it worth finding which part)
            _refuse_large(job, max_payload_bytes, index)
        copy = job_decoder.decode(encoded)
    except msgspec.ValidationError as exc:
        refuse_unencodable(job, "$", index)  # a NaN that became null: name it as such
        error = from_msgspec_error(exc, index)
        if error.path in _IDENTIFIER_FIELDS and isinstance(getattr(job, error.path[2:]), str):
            _refuse_identifiers(job, index)  # too long or empty: say what the rule is
        raise error from None
    except UnicodeEncodeError as exc:  # a lone surrogate somewhere: find it
        refuse_unencodable(job, "$", index)
        raise ValidationError(f"the job cannot be encoded: {exc}", index=index) from None
    except (TypeError, msgspec.EncodeError) as exc:
        raise ValidationError(f"the job cannot be encoded: {exc}", index=index) from None
    if _THREE_IDENTIFIERS(f"{copy.kind}\n{copy.tenant_id}\n{copy.namespace}") is None:
        _refuse_identifiers(copy, index)
    check_rules(copy, index)
    return copy


def _refuse_large(job: Job, max_bytes: int, index: int | None) -> None:
    for name in ("payload", "metadata"):
        size = len(json_encoder.encode(getattr(job, name)))
        if size > max_bytes:
            raise ValidationError(
                f"the {name} must encode to at most {max_bytes} bytes of JSON "
                f"(max_payload_bytes), got {size} bytes; pass large data by reference (a path "
                f"or URL in the payload)",
                path=f"$.{name}",
                index=index,
            )


def _refuse_lost_numbers(resources: Resources, index: int | None) -> None:
    """NaN or infinity in an optional number would become null in JSON, and null means unset:
    no timeout, no memory limit, no cost cap. Refuse it before the round trip."""
    for name in ("cpu", "memory_mb", "timeout_ms", "max_cost_usd"):
        value = getattr(resources, name)
        if isinstance(value, float) and not math.isfinite(value):
            refuse_unencodable(value, f"$.resources.{name}", index)


def normalize_result(result: Any, max_bytes: int) -> Any:
    """A handler's return value as the JSON the job will carry; ``ValidationError`` if it is not
    JSON-encodable or is larger than ``max_bytes`` once encoded."""
    if result is None or isinstance(result, bool | int):
        return result
    if isinstance(result, str):
        if not result.isascii():
            refuse_unencodable(result, "$.result")
        # A character encodes to at most 6 bytes of JSON (\uXXXX): encode only when it matters.
        if len(result) * 6 + 2 > max_bytes:
            size = len(json_encoder.encode(result))
            if size > max_bytes:
                _too_big(size, max_bytes)
        return str(result)
    check_json(result, "$.result", what="a handler's result")
    try:
        encoded = json_encoder.encode(result)
    except UnicodeEncodeError:
        refuse_unencodable(result, "$.result")
        raise
    if len(encoded) > max_bytes:
        _too_big(len(encoded), max_bytes)
    if isinstance(result, float):
        return result
    return msgspec.json.decode(encoded)


def _too_big(size: int, max_bytes: int) -> None:
    raise ValidationError(
        f"a handler's result must encode to at most {max_bytes} bytes of JSON (max_result_bytes); "
        f"got {size} - store large outputs elsewhere and return a reference",
        path="$.result",
    )
