"""What several routers share: the next page's URL, the existing-job check, the job ids asked for."""

from __future__ import annotations

from urllib.parse import quote, urlencode

import duckdb
from fastapi import HTTPException, Request

from runlytics.warehouse import job_lists, queries


def require_job(con: duckdb.DuckDBPyConnection, job_id: str) -> None:
    """queries.UnknownJob (a 404) unless the warehouse has the job."""
    if not queries.job_exists(con, job_id):
        raise queries.UnknownJob(job_id)


def distinct_ids(con: duckdb.DuckDBPyConnection, job_ids: list[str], max_chars: int, max_ids: int) -> list[str]:
    """The ids of ``a,b,…``, the parameter given once or repeated (``job_ids=a&job_ids=b``, as
    HTTP clients send a list), blanks dropped, each once, in the order given; an id holding a
    comma as warehouse/job_lists.py reads it. A 422 past ``max_chars`` in all (a repeated
    parameter's values are bounded together, as one would be), or unless they name 1 to
    ``max_ids`` distinct jobs."""
    if sum(len(value) for value in job_ids) > max_chars:
        raise HTTPException(422, f"job_ids: at most {max_chars} characters in all")
    ids = job_lists.resolve(con, job_ids)
    if not 1 <= len(ids) <= max_ids:
        raise HTTPException(422, f"job_ids must name 1 to {max_ids} distinct jobs, got {len(ids)}")
    return ids


# a cursor beside max_points was the range's lower bound, without a word; beside offset, ignored
MAX_POINTS_NO_PAGES = "max_points answers the whole range at once, with no pages to continue"
NO_OFFSET = "a cursor goes on after its page (next has no offset)"


def not_with_cursor(cursor: str | None, name: str, given: bool, why: str) -> None:
    """A 422 when ``cursor`` and the parameter ``name`` are both ``given``: one of them would be
    ignored without a word."""
    if cursor and given:
        raise HTTPException(422, f"cursor and {name} can't be given together: {why}")


def next_url(request: Request, cursor: str | None, drop: tuple[str, ...] = ()) -> str | None:
    """The URL of the next page: this request's path and parameters with the new cursor, after
    the configured base URL (``app.state.base_url``; empty: a relative link). Never the request's
    ``Host``: a client that sent another name would get links to it."""
    if cursor is None:
        return None
    # urlencode, not replace_query_params(**params): a parameter named "self" would clash
    params = [(k, v) for k, v in request.query_params.multi_items() if k not in ("cursor", *drop)]
    raw_path = request.scope.get("raw_path")
    path = raw_path.decode("latin-1") if raw_path else quote(request.url.path)
    return f"{request.app.state.base_url}{path}?{urlencode([*params, ('cursor', cursor)])}"
