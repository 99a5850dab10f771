from __future__ import annotations

from typing import Any

from django.apps import apps
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import models, transaction

from common.audit import audit_record
from common.crypto import Keyring, get_keyring
from common.fields import Ciphertext, EncryptedTextField


def encrypted_fields() -> list[tuple[type[models.Model], list[EncryptedTextField[Any, Any]]]]:
    """Every model with an encrypted field, so rotation reaches all of them."""
    found = []
    for model in apps.get_models():
        fields = [f for f in model._meta.concrete_fields if isinstance(f, EncryptedTextField)]
        if fields:
            found.append((model, fields))
    return found


class Command(BaseCommand):
    help = (
        "Re-encrypt every encrypted value with the first key of FIELD_ENCRYPTION_KEYS, in row-locked "
        "batches. --check only reports, and exits 1 while any value uses another key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--check", action="store_true", help="change nothing; exit 1 if any value is stale"
        )
        parser.add_argument("--batch-size", type=int, default=500)

    def handle(self, *args: Any, **options: Any) -> None:
        keyring = get_keyring()
        stale_total = 0
        rotated_total = 0
        for model, fields in encrypted_fields():
            stale, rotated = self._model(model, fields, keyring, options["batch_size"], options["check"])
            stale_total += stale
            rotated_total += rotated
            self.stdout.write(
                f"{model._meta.label}: {stale} value(s) under an older key"
                + ("" if options["check"] else f", {rotated} re-encrypted")
            )
        if options["check"]:
            if stale_total:
                raise CommandError(
                    f"{stale_total} value(s) still use a key other than '{keyring.primary_kid}'. "
                    "Run rotate_encryption_keys before removing old keys."
                )
            self.stdout.write(f"All values use key '{keyring.primary_kid}'.")
        else:
            if rotated_total:
                # The platform's chain: a rotation belongs to no clinic. Each batch commits on its
                # own, so the row follows the last one (a crash before it leaves values re-encrypted
                # and a rerun, which re-encrypts nothing, records nothing either).
                audit_record(
                    clinic_id=None,
                    action="encryption.keys_rotated",
                    changes={"key": keyring.primary_kid, "values": rotated_total},
                )
            self.stdout.write(f"Re-encrypted {rotated_total} value(s) with key '{keyring.primary_kid}'.")

    def _model(
        self,
        model: type[models.Model],
        fields: list[EncryptedTextField[Any, Any]],
        keyring: Keyring,
        batch_size: int,
        check_only: bool,
    ) -> tuple[int, int]:
        stale = rotated = 0
        pks = list(model._default_manager.order_by("pk").values_list("pk", flat=True))
        for start in range(0, len(pks), batch_size):
            batch = pks[start : start + batch_size]
            with transaction.atomic():
                rows = model._default_manager.filter(pk__in=batch)
                if not check_only:
                    rows = rows.select_for_update()
                for row in rows.values_list("pk", *[f.attname for f in fields]):
                    pk, values = row[0], row[1:]
                    changes: dict[str, Ciphertext] = {}
                    for field, stored in zip(fields, values, strict=True):
                        if stored is None or keyring.kid_of(stored) == keyring.primary_kid:
                            continue
                        stale += 1
                        if check_only:
                            continue
                        plain = keyring.decrypt(stored, label=field.label, row_id=str(pk))
                        changes[field.attname] = Ciphertext(
                            keyring.encrypt(plain, label=field.label, row_id=str(pk))
                        )
                    if changes:
                        model._default_manager.filter(pk=pk).update(**changes)
                        rotated += len(changes)
        return stale, rotated
