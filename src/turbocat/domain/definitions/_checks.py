"""The semantic checks behind ``validate_definition``: graphs, expressions, declarations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from turbocat.domain import jsonschemas
from turbocat.domain.definitions.graph import Graph, Path, all_steps
from turbocat.domain.definitions.model import (
    AgentStep,
    AnyStep,
    ConditionStep,
    JSONObject,
    LoopStep,
    WaitStep,
)
from turbocat.domain.errors import ValidationFailed
from turbocat.domain.expressions import (
    ROOTS,
    ExpressionError,
    compile_template,
    has_template,
    references,
)

if TYPE_CHECKING:
    from turbocat.domain.definitions.validate import _Checker

INPUTS_KINDS = frozenset({"llm", "api"})
"""Kinds whose config templates also see ``inputs`` (the step's rendered inputs)."""
INPUTS_ROOTS = ROOTS | {"inputs"}


def check_graph(ck: _Checker, graph: Graph) -> None:
    by_key: dict[str, AnyStep] = {}
    paths: dict[str, Path] = {}
    for step, path in zip(graph.steps, graph.paths, strict=True):
        by_key.setdefault(step.key, step)
        paths.setdefault(step.key, path)
    _check_dependencies(ck, graph, by_key)
    for cycle in _cycles(graph.steps, by_key):
        first, second = by_key[cycle[0]], cycle[1 % len(cycle)]
        shown = " -> ".join([*cycle, cycle[0]])
        ck.add(
            (*paths[first.key], "depends_on", first.depends_on.index(second)),
            f"dependency cycle: {shown} (each step depends on the next)",
            "cycle",
        )
    outer = ck.visible.get(graph.parent, frozenset()) if graph.parent else frozenset()
    upstream = _upstream(graph.steps, by_key)
    for step, path in zip(graph.steps, graph.paths, strict=True):
        visible = upstream[step.key] | outer
        ck.visible[step.key] = visible
        _check_when(ck, step, path, by_key)
        _check_step_templates(ck, step, path, visible, graph.in_loop)
    if graph.sub_graph is not None and graph.sub_graph.output and graph.output_path:
        check_template(
            ck,
            graph.sub_graph.output,
            graph.output_path,
            graph.parent,
            outer | frozenset(by_key),
            graph.in_loop,
        )


def _check_dependencies(ck: _Checker, graph: Graph, by_key: dict[str, AnyStep]) -> None:
    for step, path in zip(graph.steps, graph.paths, strict=True):
        listed: set[str] = set()
        for j, dep in enumerate(step.depends_on):
            where = (*path, "depends_on", j)
            if dep == step.key:
                ck.add(where, f"step {step.key!r} depends on itself", "cycle")
            elif dep in listed:
                ck.add(where, f"step {step.key!r} lists {dep!r} twice in depends_on")
            elif dep not in by_key and dep in ck.key_paths:
                ck.add(
                    where,
                    f"step {step.key!r} depends on {dep!r}, which is in another graph; "
                    "a step can only depend on steps of its own graph (depend on the "
                    "enclosing loop or parallel step instead)",
                    "unknown_dependency",
                )
            elif dep not in by_key:
                ck.add(
                    where,
                    f"step {step.key!r} depends on unknown step {dep!r}",
                    "unknown_dependency",
                )
            listed.add(dep)


def _cycles(steps: tuple[AnyStep, ...], by_key: dict[str, AnyStep]) -> list[list[str]]:
    """Each distinct cycle once, rotated to start at its first step in document order."""
    order = {s.key: i for i, s in enumerate(steps)}
    color: dict[str, int] = {}  # 1 on the current path, 2 done
    found: dict[frozenset[str], list[str]] = {}
    for start in steps:
        if start.key in color:
            continue
        path: list[str] = [start.key]
        iters = [iter(start.depends_on)]
        color[start.key] = 1
        while iters:
            dep = next(iters[-1], None)
            if dep is None:
                color[path.pop()] = 2
                iters.pop()
            elif dep in by_key and dep != path[-1]:
                if color.get(dep) == 1:
                    cycle = path[path.index(dep) :]
                    pivot = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                    found.setdefault(frozenset(cycle), cycle[pivot:] + cycle[:pivot])
                elif dep not in color:
                    color[dep] = 1
                    path.append(dep)
                    iters.append(iter(by_key[dep].depends_on))
    return sorted(found.values(), key=lambda c: order[c[0]])


def _upstream(steps: tuple[AnyStep, ...], by_key: dict[str, AnyStep]) -> dict[str, frozenset[str]]:
    out: dict[str, frozenset[str]] = {}
    for step in steps:
        seen: set[str] = set()
        stack = [d for d in step.depends_on if d in by_key]
        while stack:
            key = stack.pop()
            if key not in seen:
                seen.add(key)
                stack.extend(d for d in by_key[key].depends_on if d in by_key)
        seen.discard(step.key)
        out[step.key] = frozenset(seen)
    return out


def _check_when(ck: _Checker, step: AnyStep, path: Path, by_key: dict[str, AnyStep]) -> None:
    if step.when is None:
        return
    conditions = [
        c for d in dict.fromkeys(step.depends_on) if isinstance(c := by_key.get(d), ConditionStep)
    ]
    where = (*path, "when")
    if not conditions:
        ck.add(
            where,
            f"step {step.key!r} has when {step.when!r} but depends on no condition step",
            "invalid_when",
        )
    elif len(conditions) > 1:
        names = ", ".join(repr(c.key) for c in conditions)
        ck.add(
            where,
            f"step {step.key!r} has when {step.when!r} but depends on several conditions "
            f"({names}); it must depend on exactly one",
            "invalid_when",
        )
    else:
        cond = conditions[0]
        labels = [b.label for b in cond.branches] + ([cond.default] if cond.default else [])
        if step.when not in labels:
            ck.add(
                where,
                f"step {step.key!r} has when {step.when!r}, a label condition "
                f"{cond.key!r} does not define (it has {', '.join(labels)})",
                "invalid_when",
            )


def _check_step_templates(
    ck: _Checker, step: AnyStep, path: Path, visible: frozenset[str], in_loop: bool
) -> None:
    if isinstance(step, AgentStep):
        ck.check_json_templates(step.inputs, (*path, "inputs"), step.key, visible, in_loop)
        if step.component is not None:
            config_path = (*path, "component", "config")
            roots = INPUTS_ROOTS if step.component.kind.value in INPUTS_KINDS else ROOTS
            ck.check_json_templates(
                step.component.config, config_path, step.key, visible, in_loop, roots
            )
    elif isinstance(step, ConditionStep):
        for i, branch in enumerate(step.branches):
            where = (*path, "branches", i, "when")
            check_template(ck, branch.when, where, step.key, visible, in_loop)
    elif isinstance(step, LoopStep):
        check_template(ck, step.over, (*path, "over"), step.key, visible, in_loop)
    elif isinstance(step, WaitStep) and step.until and has_template(step.until):
        check_template(ck, step.until, (*path, "until"), step.key, visible, in_loop)


def check_template(
    ck: _Checker,
    template: str,
    path: Path,
    step_key: str | None,
    visible: frozenset[str],
    in_loop: bool,
    roots: frozenset[str] = ROOTS,
) -> None:
    """Compile ``template`` and check that each ``steps.X`` it reads is visible from here."""
    who = f"step {step_key!r}: " if step_key else ""
    try:
        compiled = compile_template(
            template, max_length=ck.limits.max_expression_length, roots=roots
        )
    except ExpressionError as exc:
        ck.add(path, f"{who}{exc.detail}", f"expression_{exc.kind}")
        return
    for ref in sorted(references(compiled)):
        root = ref[0]
        if root in ("item", "index") and not in_loop:
            ck.add(path, f"{who}{root} exists only inside a loop body", "invalid_reference")
        if root != "steps" or (len(ref) > 1 and ref[1] in visible):
            continue
        if len(ref) == 1:
            message = "steps must be followed by a step key, such as steps.fetch.output"
        elif ref[1] not in ck.key_paths:
            message = f"steps.{ref[1]} refers to an unknown step"
        elif ref[1] == step_key:
            message = f"steps.{ref[1]} is this step itself"
        elif (owner := ck.owner.get(ref[1])) is not None and owner != step_key:
            message = f"steps.{ref[1]} is inside the body of {owner!r}; read steps.{owner}.output"
        else:
            message = (
                f"steps.{ref[1]} is not upstream of this step; add {ref[1]!r} to depends_on "
                "(directly or through another dependency)"
            )
        ck.add(path, who + message, "invalid_reference")


def check_declarations(ck: _Checker, top_keys: frozenset[str]) -> None:
    defn = ck.defn
    signals = _unique_names(ck, "signals", [s.name for s in defn.signals])
    queries = _unique_names(ck, "queries", [q.name for q in defn.queries])
    _unique_names(ck, "work_queues", [w.name for w in defn.work_queues])
    _unique_names(ck, "child_workflows", [c.name for c in defn.child_workflows])
    queue_queries = {w.query for w in defn.work_queues if w.query is not None}
    for i, query in enumerate(defn.queries):
        if query.expression is not None:
            where = ("queries", i, "expression")
            check_template(ck, query.expression, where, None, top_keys, False)
        elif query.name not in queue_queries:
            ck.add(
                ("queries", i, "expression"),
                f"query {query.name!r} needs an expression (only a work queue's query, which "
                "answers with the queue, may omit it)",
                "missing",
            )
    fed: dict[str, str] = {}
    for i, queue in enumerate(defn.work_queues):
        if queue.signal not in signals:
            ck.add(
                ("work_queues", i, "signal"),
                f"work queue {queue.name!r} names undeclared signal {queue.signal!r}",
                "unknown_signal",
            )
        elif queue.signal in fed:
            ck.add(
                ("work_queues", i, "signal"),
                f"work queue {queue.name!r}: signal {queue.signal!r} already feeds "
                f"work queue {fed[queue.signal]!r}",
            )
        fed.setdefault(queue.signal, queue.name)
        if queue.query is not None and queue.query not in queries:
            ck.add(
                ("work_queues", i, "query"),
                f"work queue {queue.name!r} names undeclared query {queue.query!r}",
                "unknown_query",
            )
        if queue.item_schema is not None:
            _check_schema(ck, queue.item_schema, ("work_queues", i, "item_schema"))
    queues = {w.name for w in defn.work_queues}
    for step, path, _ in all_steps(defn):
        if isinstance(step, WaitStep) and step.signal and step.signal.name not in signals:
            ck.add(
                (*path, "signal", "name"),
                f"step {step.key!r} waits for undeclared signal {step.signal.name!r}",
                "unknown_signal",
            )
        if isinstance(step, WaitStep) and step.queue and step.queue.name not in queues:
            ck.add(
                (*path, "queue", "name"),
                f"step {step.key!r} takes from undeclared work queue {step.queue.name!r} "
                f"(declared: {', '.join(sorted(queues)) or 'none'})",
                "unknown_queue",
            )
    for i, signal in enumerate(defn.signals):
        if signal.payload_schema is not None:
            _check_schema(ck, signal.payload_schema, ("signals", i, "schema"))
    if defn.inputs is not None:
        _check_schema(ck, defn.inputs, ("inputs",))
        if defn.inputs.get("type", "object") != "object":
            ck.add(("inputs", "type"), "the input schema must describe an object (type object)")


def _unique_names(ck: _Checker, field: str, names: list[str]) -> set[str]:
    seen: set[str] = set()
    for i, name in enumerate(names):
        if name in seen:
            ck.add((field, i, "name"), f"duplicate name {name!r} in {field}")
        seen.add(name)
    return seen


def _check_schema(ck: _Checker, schema: JSONObject, path: Path) -> None:
    try:
        jsonschemas.check_json_schema(schema, (*ck.prefix, *path))
    except ValidationFailed as exc:
        ck.errors.extend(exc.errors)
