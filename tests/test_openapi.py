"""The OpenAPI schema is the one recorded in tests/openapi.json: paths (in their order, which is
the order routes are matched in), operations, parameters, response models and component schemas.
Only descriptions may change without updating the record.

When the API changes on purpose, rewrite the record and review its diff:
``.venv/bin/python tests/test_openapi.py``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import BaseModel

from runlytics.api import models
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


def test_every_field_of_every_model_has_a_description() -> None:
    schemas = current()["components"]["schemas"]
    missing = [
        f"{name}.{field}"
        for name, schema in schemas.items()
        for field, prop in schema.get("properties", {}).items()
        if not (isinstance(prop.get("description"), str) and prop["description"].strip())
    ]
    assert missing == []
    assert sum(len(s.get("properties", {})) for s in schemas.values()) > 150  # the check saw the fields


def test_the_bearer_scheme_is_declared_and_guards_all_but_the_probes() -> None:
    schema = current()
    assert schema["components"]["securitySchemes"]["bearer"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    security = {path: op.get("security") for path, ops in schema["paths"].items() for op in ops.values()}
    assert security.pop("/healthz") is None and security.pop("/readyz") is None
    assert len(security) == 16
    assert all(given == [{"bearer": []}] for given in security.values()), security


def test_operation_ids_are_stable_unique_and_snake_case() -> None:
    ids = [op["operationId"] for ops in current()["paths"].values() for op in ops.values()]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[a-z]+(_[a-z]+)*", i) for i in ids), ids
    assert {"get_job_analytics", "get_summary", "compare_jobs", "list_jobs", "get_job"} <= set(ids)


def test_docs_name_every_operation_id() -> None:
    docs = (Path(__file__).parent.parent / "docs" / "api.md").read_text()
    ids = [op["operationId"] for ops in current()["paths"].values() for op in ops.values()]
    assert [i for i in ids if f"`{i}`" not in docs] == []


# (`bearer s3cret` is the token: the scheme is case-insensitive, tests/test_api_requests.py)
@pytest.mark.parametrize("header", [None, "", "Bearer", "Bearer ", "Basic czNjcmV0", "bearer wrong", "Bearer wrong"])
def test_the_declared_scheme_changes_no_answer(header: str | None) -> None:
    """HTTPBearer(auto_error=False) only declares the scheme: the guard's own check still answers."""
    client = TestClient(create_app(Path("/nonexistent/warehouse.duckdb"), token="s3cret"))
    headers = {} if header is None else {"Authorization": header}
    answer = client.get("/openapi.json", headers=headers)
    assert answer.status_code == 401
    assert answer.json() == {"detail": "missing or wrong bearer token"}
    assert answer.headers["www-authenticate"] == "Bearer"
    assert client.get("/openapi.json", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/healthz").json()["status"] == "ok"  # the probes stay open


@pytest.mark.parametrize(
    ("path", "model"),
    [
        ("/api/training/{job_id}/analytics", models.JobAnalytics),
        ("/api/training/analytics/summary", models.Summary),
        ("/api/training/analytics/compare", models.Comparison),
    ],
)
def test_the_seed_endpoints_carry_valid_examples(path: str, model: type[BaseModel]) -> None:
    schema = current()
    answer = schema["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"$ref": f"#/components/schemas/{model.__name__}"}
    examples = schema["components"]["schemas"][model.__name__]["examples"]
    assert len(examples) == 1
    # the example is an answer the model accepts, every field given
    assert model.model_validate(examples[0]).model_dump() == examples[0]


def test_the_job_analytics_example_is_the_worked_example_of_analytics_md() -> None:
    (example,) = current()["components"]["schemas"]["JobAnalytics"]["examples"]
    assert example["performance"]["average_samples_per_second"] == 4.2
    assert example["efficiency"] == {"gpu_utilization_score": 98.5, "throughput_score": 84.0, "overall_score": 91.25}
    losses = example["losses"]
    assert (losses["initial_loss"], losses["final_loss"]) == (2.45, 0.32)
    assert round(100 * (2.45 - 0.32) / 2.45, 2) == losses["loss_reduction_percent"]


if __name__ == "__main__":
    RECORD.write_text(json.dumps(current(), indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {RECORD}")
