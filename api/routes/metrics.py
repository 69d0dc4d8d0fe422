"""``GET /metrics``: the Prometheus text format (docs/metrics.md); not in the OpenAPI schema."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from runlytics.warehouse import snapshots

from ..metrics import WarehouseCollector


def router(reader: snapshots.Reader) -> APIRouter:
    """The /metrics route over this reader, with a registry of its own."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(WarehouseCollector(reader))
    routes = APIRouter()

    @routes.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        """The Prometheus text format (docs/metrics.md)."""
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return routes
