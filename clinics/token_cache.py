"""API tokens through the shared cache: Zulip's `maybe_get_user_profile_by_api_key`, keyed by the token's digest.

Every API request starts by finding its token with the token's user, the user's
clinic and the clinic's WhatsApp connection: one query (`select_related`, in
`clinics.selectors.api_token_for_key`). The cache keeps what that query returned,
so a request usually finds all four with one cache read and no query. Those rows
change rarely, and every writer of them ends the copies it makes stale with an
explicit call here (a signal on save would miss the writers that use `update()`):

- a token deleted (revoked, or ended with its user): `clinics.services.api_tokens_end`;
- a token's last use recorded: `clinics.services.api_token_record_use`;
- a user saved (password, activity, role, clinic, anything): `User.save`;
- a user deleted in admin: `clinics.admin.UserAdmin`;
- a clinic's fields written: `clinics.services` (`_apply_clinic_fields`);
- a clinic's WhatsApp connection written: every writer calls
  `whatsapp.cache.whatsapp_account_changed`, which reaches `clinics.services.clinic_tokens_forget`.

Ending a copy puts a marker in its place for `ENDED_SECONDS`, once at once and
again when the writing transaction commits. A request that read the old rows
just before the write cannot put them back while the marker stands (it only
`add`s), so a revoked token, a deactivated user or a changed password ends
access at the next request on every server that shares the cache.

The copies are only as shared as the cache: with a local-memory cache every
process keeps its own, which another process's write could not end. So the cache
is used only when `settings.API_TOKEN_CACHE` is on, which it is when `CACHE_URL`
names a shared cache (Redis).
"""

from __future__ import annotations

from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache
from django.db import transaction

# How long a copy lives unused: it bounds the life of a copy some missed path left stale.
ENTRY_SECONDS = 300
# How long a marker stands. Far longer than the moment between a request's read of the rows and
# its `add` of them; a request stalled longer still can keep an old copy only until its token's
# next recorded use (TOKEN_USE_RESOLUTION) drops it, or ENTRY_SECONDS.
ENDED_SECONDS = 10
_ENDED = "ended"


def _key(digest: str) -> str:
    return f"clinics:api-token:{digest}"


def enabled() -> bool:
    return bool(settings.API_TOKEN_CACHE)


def cached(digest: str) -> tuple[object | None, bool]:
    """What the cache holds for this token, and whether a fresh read may be kept (no marker stands)."""
    value = cache.get(_key(digest))
    if value == _ENDED:
        return None, False
    return value, True


def keep(digest: str, token: object) -> None:
    """Keep a freshly loaded token (pickled now, before anything decrypts a secret), unless a marker stands."""
    cache.add(_key(digest), token, ENTRY_SECONDS)


def forget(digests: Iterable[str]) -> None:
    """End the copies of these tokens: at once, and again once the current transaction commits."""
    if not enabled():
        return
    markers = {_key(digest): _ENDED for digest in digests}
    if not markers:
        return
    cache.set_many(markers, ENDED_SECONDS)
    if transaction.get_connection().in_atomic_block:
        transaction.on_commit(lambda: cache.set_many(markers, ENDED_SECONDS))


def forget_use(digest: str) -> None:
    """Drop a copy whose last use is old: the next request reads the token again (or finds it gone)."""
    if enabled():
        cache.delete(_key(digest))
