"""The JSON Schema of the definition format, generated from the models.

``schemas/workflow-definition.schema.json`` at the repository root is this text; a unit test
keeps the two equal. Regenerate with::

    python -c "from turbocat.domain.definitions import definition_json_schema_text as t; \
print(t(), end='')" > schemas/workflow-definition.schema.json
"""

from __future__ import annotations

import json

from turbocat.domain.definitions.model import WorkflowDefinition
from turbocat.domain.expressions import JSONValue

SCHEMA_ID = "urn:turbocat:workflow-definition:v1"
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def definition_json_schema() -> dict[str, JSONValue]:
    """JSON Schema (draft 2020-12) of a workflow definition, with titles and descriptions."""
    schema: dict[str, JSONValue] = WorkflowDefinition.model_json_schema(
        by_alias=True, mode="validation"
    )
    schema["title"] = "turbocat workflow definition"
    _title_properties(schema)
    return {"$schema": SCHEMA_DIALECT, "$id": SCHEMA_ID, **schema}


def _title_properties(node: JSONValue) -> None:
    # pydantic leaves the title off properties that are a $ref; a form renderer wants one.
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            for name, prop in properties.items():
                if isinstance(prop, dict) and "title" not in prop:
                    prop["title"] = name.replace("_", " ").capitalize()
        for child in node.values():
            _title_properties(child)
    elif isinstance(node, list):
        for child in node:
            _title_properties(child)


def definition_json_schema_text() -> str:
    """The schema as the committed file holds it: two-space indented JSON and a newline."""
    return json.dumps(definition_json_schema(), indent=2, ensure_ascii=False) + "\n"
