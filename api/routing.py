"""The job id of a per-job path, whatever characters it holds (inputs.md allows any but none).

Starlette compiles a route's path into ``^…$`` and matches it with ``re.match``, its ``path``
convertor being ``.*`` (starlette/routing.py, compile_path). There ``.`` takes no line feed, and
``$`` also matches before a final line feed: with ``{job_id:path}`` a job ``nl\\nid`` had no
per-job route (404 "Not Found"), and a path ending in ``%0A`` answered as the path without it
(``/api/training/tr%0A`` the record of job ``tr``, not of ``tr\\n``;
``/api/training/many/analytics%0A`` the analytics of ``many``). The per-job routes take the id
with these convertors instead (registered with Starlette here, so a route module imports them):

- ``JOB`` (``{job_id:job}``), an id followed by a route's suffix (``/{job_id:job}/analytics``):
  every character (``(?s:.*)``), in a path that does not end in a line feed, so that ``$`` can only
  match at the path's end: a suffix never ends in one, and ``…/analytics\\n`` is no analytics.
- ``JOB_TO_END`` (``{job_id:job_to_end}``), an id that ends the path (``/api/training/{id}``):
  every character to the end. The pattern is greedy, so ``$`` matches at the very end first:
  ``/api/training/tr%0A`` is the record of ``tr\\n``.

A route of no job id (``/api/training/jobs``) still matches its path with a line feed after it:
api/job_paths.py sends such a path to the per-job routes (the record of ``jobs\\n``) or answers 404.
"""

from __future__ import annotations

from starlette.convertors import Convertor, register_url_convertor


class JobIdConvertor(Convertor[str]):
    """A job id that ends the path: every character, line feeds included."""

    regex = "(?s:.*)"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


class JobIdBeforeSuffixConvertor(JobIdConvertor):
    """A job id followed by a route's suffix: every character, in a path not ending in a line feed
    (the suffix never does; ``$`` would match before it)."""

    regex = r"(?!(?s:.*)\n\Z)(?s:.*)"


register_url_convertor("job", JobIdBeforeSuffixConvertor())
register_url_convertor("job_to_end", JobIdConvertor())
JOB = "{job_id:job}"
JOB_TO_END = "{job_id:job_to_end}"
