"""Trigger validation beyond field types: NUL characters, the step graph and each kind's params.

Every problem becomes a (JSON pointer, detail) pair, so the caller learns all of them at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from pydantic import ValidationError

from shared.kinds import StepKind, registry
from shared.models.api import MAX_PARAMS_BYTES, StepSpec, TriggerRequest


class RequestInvalid(Exception):
    def __init__(self, detail: str, errors: list[tuple[str, str]]) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


def pointer(path: tuple[int | str, ...]) -> str:
    def escape(part: int | str) -> str:
        return str(part).replace("~", "~0").replace("/", "~1")

    return "".join("/" + escape(p) for p in path)


def dotted(path: tuple[int | str, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "body"


# Deeper bodies are refused before anything walks them: the walks here recurse, and orjson, which
# stores and publishes these values, gives up past 254 levels.
MAX_DEPTH = 64


def too_deep(value: Any, limit: int = MAX_DEPTH) -> tuple[int | str, ...] | None:
    """The path of the first object or array nested deeper than `limit`, or None; iterative."""
    stack: list[tuple[Any, tuple[int | str, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict | list):
            if len(path) >= limit:
                return path
            children = item.items() if isinstance(item, dict) else enumerate(item)
            stack.extend((child, (*path, key)) for key, child in children if isinstance(child, dict | list))
    return None


def find_nul(value: Any, path: tuple[int | str, ...] = ()) -> Iterator[tuple[int | str, ...]]:
    if isinstance(value, str):
        if "\x00" in value:
            yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and "\x00" in key:
                yield (*path, key)
            yield from find_nul(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from find_nul(item, (*path, index))


def pydantic_errors(exc: ValidationError, prefix: tuple[int | str, ...] = ()) -> list[tuple[str, str]]:
    found = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        message = error["msg"]
        # pydantic marks an invalid dict key by appending "[key]", which is no JSON pointer step:
        # the pointer names the entry, the message says the key is at fault.
        if len(loc) >= 2 and loc[-1] == "[key]":
            loc = loc[:-1]
            message = f"invalid key: {message}"
        if error["type"] == "extra_forbidden":
            message = f"unknown field {loc[-1]!r}" if loc else "unknown field"
        found.append((pointer(prefix + loc), message))
    return found


def _cycle(steps: list[StepSpec]) -> list[str] | None:
    """A cycle among valid dependency edges, as the names along it, or None."""
    edges = {s.name: list(s.depends_on) for s in steps}
    state: dict[str, int] = {}
    trail: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        trail.append(name)
        for dep in edges.get(name, []):
            if dep not in edges:
                continue
            if state.get(dep) == 1:
                return [*trail[trail.index(dep) :], dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        trail.pop()
        state[name] = 2
        return None

    for step in steps:
        if step.name not in state:
            found = visit(step.name)
            if found:
                return found
    return None


def graph_errors(steps: list[StepSpec]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    first: dict[str, int] = {}
    for i, step in enumerate(steps):
        if step.name in first:
            errors.append(
                (f"/steps/{i}/name", f"duplicate step name {step.name!r} (also steps[{first[step.name]}])")
            )
        else:
            first[step.name] = i
    for i, step in enumerate(steps):
        seen: set[str] = set()
        for j, dep in enumerate(step.depends_on):
            where = f"/steps/{i}/depends_on/{j}"
            if dep == step.name:
                errors.append((where, f"step {step.name!r} depends on itself"))
            elif dep not in first:
                errors.append((where, f"unknown step {dep!r}"))
            elif dep in seen:
                errors.append((where, f"{dep!r} is listed twice"))
            seen.add(dep)
    if not errors:
        cycle = _cycle(steps)
        if cycle:
            errors.append(("/steps", "dependency cycle: " + " -> ".join(cycle)))
    return errors


def params_errors(steps: list[StepSpec], kinds: dict[str, StepKind]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    for i, step in enumerate(steps):
        kind = kinds.get(step.kind)
        if kind is None:
            known = ", ".join(sorted(kinds))
            errors.append((f"/steps/{i}/kind", f"unknown step kind {step.kind!r} (known: {known})"))
            continue
        if len(orjson.dumps(step.params)) > MAX_PARAMS_BYTES:
            errors.append((f"/steps/{i}/params", f"params are larger than {MAX_PARAMS_BYTES} bytes"))
            continue
        try:
            kind.parse_params(step.params)
        except ValidationError as exc:
            errors.extend(pydantic_errors(exc, ("steps", i, "params")))
    return errors


def validate_trigger(body: Any, kinds: dict[str, StepKind] | None = None) -> TriggerRequest:
    """The whole trigger check; raises RequestInvalid listing every problem found."""
    if not isinstance(body, dict):
        raise RequestInvalid("the request body must be a JSON object", [("", "expected an object")])
    deep = too_deep(body)
    if deep is not None:
        where = pointer(deep)
        raise RequestInvalid(
            f"{_describe(where)} is nested deeper than {MAX_DEPTH} levels",
            [(where, f"nested deeper than {MAX_DEPTH} levels")],
        )
    nul = [(pointer(p), "NUL characters are not allowed") for p in find_nul(body)]
    if nul:
        raise RequestInvalid(f"{_describe(nul[0][0])} contains a NUL character", nul)
    try:
        request = TriggerRequest.model_validate(body)
    except ValidationError as exc:
        errors = pydantic_errors(exc)
        raise RequestInvalid(f"{_describe(errors[0][0])}: {errors[0][1]}", errors) from None
    errors = graph_errors(request.steps) + params_errors(
        request.steps, registry() if kinds is None else kinds
    )
    if errors:
        raise RequestInvalid(f"{_describe(errors[0][0])}: {errors[0][1]}", errors)
    return request


def _describe(ptr: str) -> str:
    parts: list[int | str] = [
        int(p) if p.isascii() and p.isdigit() else p.replace("~1", "/").replace("~0", "~")
        for p in ptr.split("/")[1:]
    ]
    return dotted(tuple(parts))
