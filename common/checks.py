from __future__ import annotations

from typing import Any

from django.apps import apps
from django.conf import settings
from django.core import checks

from .audit import RULES, encrypted_fields_without_rule
from .crypto import Keyring, KeyringError


@checks.register(checks.Tags.security, deploy=True)
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    try:
        Keyring.parse(list(getattr(settings, "FIELD_ENCRYPTION_KEYS", []) or []))
    except KeyringError as exc:
        return [
            checks.Error(
                str(exc),
                hint="Run `python manage.py generate_encryption_key` and set FIELD_ENCRYPTION_KEYS.",
                id="clinics.E001",
            )
        ]
    keys = settings.FIELD_ENCRYPTION_KEYS
    if len(keys) == 1 and str(keys[0]).startswith("dev:"):
        return [
            checks.Error(
                "FIELD_ENCRYPTION_KEYS holds only a temporary development key.",
                hint="Generate a real key with `python manage.py generate_encryption_key`.",
                id="clinics.E002",
            )
        ]
    return []


@checks.register(checks.Tags.security)
def check_audit_rules(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Fail closed: every encrypted field says how the audit trail shows it (see common.audit)."""
    return [
        checks.Error(
            f"{label} is encrypted but has no rule for how the audit trail shows it.",
            hint=f"Add it to the model's `audit_secrets` with one of: {', '.join(RULES)}.",
            id="clinics.E003",
        )
        for label in encrypted_fields_without_rule(apps.get_models())
    ]
