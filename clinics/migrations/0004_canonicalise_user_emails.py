"""Store every e-mail in the one canonical form (NFKC, case-folded, trimmed).

Rows written under the old rule (trimmed and lower-cased) may spell an address
another way (`ſara@…`, full-width letters, decomposed accents). Each one is
rewritten to its canonical form. Two rows that become the same address are two
accounts a person could not tell apart: they are never merged here (which one
keeps its clinic, its tokens, its password?). The migration stops, lists them,
and changes nothing, so an operator can rename or remove one and migrate again.
"""

from __future__ import annotations

import unicodedata
from collections import defaultdict

from django.db import migrations


def _canonical(email: str) -> str:
    # Frozen copy of clinics.models.canonical_email as of this migration: a later
    # change to the rule must not change what this migration did.
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email or "").casefold()).strip()


class EmailCollisionError(RuntimeError):
    pass


def canonicalise_emails(apps, schema_editor):
    User = apps.get_model("clinics", "User")
    rows = list(User.objects.using(schema_editor.connection.alias).order_by("pk").values_list("pk", "email"))
    by_canonical = defaultdict(list)
    for pk, email in rows:
        by_canonical[_canonical(email)].append((pk, email))
    collisions = {canonical: users for canonical, users in by_canonical.items() if len(users) > 1}
    if collisions:
        lines = [
            f"  {canonical}: " + ", ".join(f"id {pk} ({email!r})" for pk, email in users)
            for canonical, users in sorted(collisions.items())
        ]
        raise EmailCollisionError(
            "These users' e-mails are one address once canonicalised (NFKC, case-folded, trimmed). "
            "Nothing was changed: rename or remove all but one of each, then migrate again.\n" + "\n".join(lines)
        )
    for canonical, ((pk, email),) in by_canonical.items():
        if email != canonical:
            User.objects.using(schema_editor.connection.alias).filter(pk=pk).update(email=canonical)


class Migration(migrations.Migration):
    dependencies = [("clinics", "0003_add_clinic_language")]

    # Reversing keeps the canonical spellings: they are valid under the old rule too.
    operations = [migrations.RunPython(canonicalise_emails, migrations.RunPython.noop)]
