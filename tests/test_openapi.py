"""The OpenAPI schema is the one recorded in tests/openapi.json: paths (in their order, which is
the order routes are matched in), operations, parameters, response models and component schemas.
Only descriptions may change without updating the record.

When the API changes on purpose, rewrite the record and review its diff:
``.venv/bin/python tests/test_openapi.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from runlytics.api.app import create_app

RECORD = Path(__file__).with_name("openapi.json")


def current() -> dict[str, Any]:
    # the schema needs no warehouse: create_app opens none until a request comes
    return create_app(Path("/nonexistent/warehouse.duckdb"), token=None).openapi()


def without_descriptions(node: Any, parent: str | None = None) -> Any:
    """The schema less its prose: every "description" text but a model field named so."""
    if isinstance(node, dict):
        return {
            key: without_descriptions(value, key)
            for key, value in node.items()
            if not (key == "description" and isinstance(value, str) and parent != "properties")
        }
    if isinstance(node, list):
        return [without_descriptions(item, parent) for item in node]
    return node


def test_the_schema_is_the_recorded_one() -> None:
    recorded = json.loads(RECORD.read_text())
    schema = current()
    assert list(schema["paths"]) == list(recorded["paths"])  # the routes' order
    assert without_descriptions(schema) == without_descriptions(recorded)


if __name__ == "__main__":
    RECORD.write_text(json.dumps(current(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {RECORD}")
