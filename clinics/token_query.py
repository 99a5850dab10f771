"""The token's one query (token, user, clinic, and the WhatsApp state when asked), built once per process.

Every API request starts with it. On PostgreSQL it is a `common.prebuilt_query.PrebuiltQuery`
rather than `select_related(...).get()`, which the ORM compiles anew on every request. Under
gunicorn, in one run against the ORM's query, the settings read went from 0.27 to 0.47 of the
floor app and the status poll from 0.28 to 0.42 (bench/reports/2026-12-02-token-statement.md).
"""

from __future__ import annotations

from common.prebuilt_query import PrebuiltQuery

from .models import ApiToken

_queries: dict[str, PrebuiltQuery[ApiToken]] = {}


def api_token_by_digest(digest: str, *, path: str) -> ApiToken:
    """The token whose digest this is, with the objects along `path` ("user__clinic"...) loaded.

    Raises ApiToken.DoesNotExist when there is none, like `get()`.
    """
    query = _queries.get(path)
    if query is None:
        query = _queries[path] = PrebuiltQuery(ApiToken, by="digest", path=path)
    return query.get(digest)
