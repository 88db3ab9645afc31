"""Agent prompts (seed 003): versioned prompt text with declared variables, rendered safely.

A prompt's text uses the workflow expression language with one root only, ``vars``: write
``{{ vars.customer_name }}``, ``{{ vars.tone | default('friendly') }}``, and so on. Any other root
(``input``, ``steps``...) is refused when the prompt is saved, and so is a reference to a variable
the prompt does not declare. Rendering is the same sandboxed evaluation as in workflows (our own
AST walked against an allow-list, bounded in steps and size); variable values are data and are
never evaluated.

``prompt_variables`` maps a variable name to ``{type?, description?, required?, default?}``;
``type`` is a JSON type name and, when given, the supplied value must have it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from turbocat.domain import expressions
from turbocat.domain.errors import FieldError, ValidationFailed

ROOT = "vars"
ROOTS = frozenset({ROOT})
VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
MAX_VARIABLES = 100

JSONType = Literal["string", "number", "integer", "boolean", "object", "array"]


class PromptVariable(BaseModel):
    """One declared variable of a prompt."""

    model_config = ConfigDict(extra="forbid")

    type: JSONType | None = None
    description: str | None = Field(default=None, max_length=2000)
    required: bool = False
    default: Any = None


def _json_type_ok(value: Any, kind: JSONType) -> bool:
    match kind:
        case "string":
            return isinstance(value, str)
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "object":
            return isinstance(value, dict)
        case "array":
            return isinstance(value, list)


def check_variables(raw: Mapping[str, Any], path: tuple[str | int, ...]) -> dict[str, Any]:
    """The canonical ``prompt_variables`` (defaults omitted), or ValidationFailed with paths."""
    if len(raw) > MAX_VARIABLES:
        raise ValidationFailed.field(path, f"at most {MAX_VARIABLES} variables")
    errors: list[FieldError] = []
    out: dict[str, Any] = {}
    for name, spec in raw.items():
        if not re.match(VARIABLE_NAME, name):
            errors.append(FieldError((*path, name), f"{name!r} is not a valid variable name"))
            continue
        try:
            var = PromptVariable.model_validate(spec if spec is not None else {})
        except ValidationError as exc:
            errors.extend(
                FieldError((*path, name, *e["loc"]), str(e["msg"]), str(e["type"]))
                for e in exc.errors()
            )
            continue
        if var.default is not None and var.type and not _json_type_ok(var.default, var.type):
            errors.append(FieldError((*path, name, "default"), f"default must be a {var.type}"))
        out[name] = var.model_dump(exclude_defaults=True)
    if errors:
        raise ValidationFailed(errors[0].message, errors)
    return out


def compile_prompt(content: str, path: tuple[str | int, ...]) -> expressions.Template:
    try:
        return expressions.compile_template(content, roots=ROOTS)
    except expressions.ExpressionError as exc:
        raise ValidationFailed.field(path, exc.detail, f"expression_{exc.kind}") from None


def referenced_variables(template: expressions.Template) -> set[str] | None:
    """Variable names the prompt reads; None when one is computed (``vars[x]``)."""
    names: set[str] = set()
    for ref in expressions.references(template):
        if len(ref) < 2:
            return None
        names.add(ref[1])
    return names


def check_prompt(
    content: str, variables: Mapping[str, Any], path: tuple[str | int, ...] = ("body",)
) -> None:
    """Refuse a prompt whose text does not compile or reads undeclared variables."""
    template = compile_prompt(content, (*path, "prompt_content"))
    used = referenced_variables(template)
    unknown = sorted((used or set()) - set(variables))
    if unknown:
        raise ValidationFailed.field(
            (*path, "prompt_content"),
            f"the prompt reads undeclared variables: {', '.join(unknown)} "
            "(declare them in prompt_variables)",
            "undeclared_variable",
        )


def render(
    content: str,
    variables: Mapping[str, Any],
    values: Mapping[str, Any],
    path: tuple[str | int, ...] = ("body", "variables"),
) -> str:
    """The prompt text with ``values`` substituted; unknown, missing and mistyped values refused."""
    errors: list[FieldError] = [
        FieldError((*path, name), f"unknown variable {name!r}", "unknown_variable")
        for name in sorted(set(values) - set(variables))
    ]
    scope: dict[str, Any] = {}
    for name, raw in variables.items():
        spec = PromptVariable.model_validate(raw)
        if name in values:
            value = values[name]
            if spec.type and value is not None and not _json_type_ok(value, spec.type):
                errors.append(FieldError((*path, name), f"{name!r} must be a {spec.type}", "type"))
            scope[name] = value
        elif spec.default is not None:
            scope[name] = spec.default
        elif spec.required:
            errors.append(
                FieldError((*path, name), f"missing required variable {name!r}", "missing")
            )
    if errors:
        names = ", ".join(str(e.path[-1]) for e in errors)
        raise ValidationFailed(f"variables are not right: {names}", errors)
    template = compile_prompt(content, ("prompt_content",))
    try:
        rendered = template.render({ROOT: scope})
    except expressions.ExpressionError as exc:
        raise ValidationFailed.field(path, exc.detail, f"expression_{exc.kind}") from None
    if isinstance(rendered, str):
        return rendered
    return "" if rendered is None else json.dumps(rendered, separators=(",", ":"))


@dataclass(frozen=True)
class BuiltinPrompt:
    """A prompt shipped with turbocat (seed 002's ``is_system`` agent templates)."""

    name: str
    display_name: str
    description: str
    role: str
    prompt_content: str
    prompt_variables: Mapping[str, Any] = field(default_factory=dict)
    model_provider: str | None = "openai"
    model_name: str | None = "gpt-4o-mini"
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"temperature": 0.2})
    recommended_models: tuple[str, ...] = ("gpt-4o-mini", "claude-3-5-haiku-latest")
    tags: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    version: str = "1.0.0"


BUILTIN_PROMPTS: tuple[BuiltinPrompt, ...] = (
    BuiltinPrompt(
        name="summarizer",
        display_name="Summarizer",
        description="Summarizes a text in a few sentences or bullet points.",
        role="summarizer",
        prompt_content=(
            "You summarize {{ vars.kind | default('documents') }} for busy people. Write at most "
            "{{ vars.max_sentences | default(5) }} short sentences, keep names, numbers and "
            "dates exact, and never invent facts that are not in the text."
        ),
        prompt_variables={
            "kind": {"type": "string", "description": "what is summarized (emails, pages...)"},
            "max_sentences": {"type": "integer", "default": 5},
        },
        tags=("summarization",),
        capabilities=("summarize",),
    ),
    BuiltinPrompt(
        name="classifier",
        display_name="Classifier",
        description="Assigns exactly one of the given labels to a text.",
        role="classifier",
        prompt_content=(
            "Classify the user's text into exactly one of these labels: "
            "{{ vars.labels | join(', ') }}. Answer with the label only. If none fits, answer "
            "{{ vars.fallback | default('other') }}."
        ),
        prompt_variables={
            "labels": {"type": "array", "required": True, "description": "allowed labels"},
            "fallback": {"type": "string"},
        },
        parameters={"temperature": 0},
        tags=("classification",),
        capabilities=("classify",),
    ),
    BuiltinPrompt(
        name="support-reply-writer",
        display_name="Support reply writer",
        description="Drafts a polite, accurate reply to a customer message.",
        role="customer support agent",
        prompt_content=(
            "You are a customer support agent for {{ vars.company_name }}. Reply in a "
            "{{ vars.tone | default('friendly and concise') }} tone, in the customer's language. "
            "Answer only from the facts given; if something is unknown, say a colleague will "
            "follow up. Sign as {{ vars.signature | default('The support team') }}."
        ),
        prompt_variables={
            "company_name": {"type": "string", "required": True},
            "tone": {"type": "string"},
            "signature": {"type": "string"},
        },
        parameters={"temperature": 0.4},
        tags=("support", "email"),
        capabilities=("write",),
    ),
)
