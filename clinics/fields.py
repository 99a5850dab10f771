"""EncryptedTextField: a text column whose value is AES-256-GCM ciphertext.

Django hands ``get_db_prep_value`` and ``from_db_value`` no model instance, but
the ciphertext is bound to its row, so the work happens where the row is known:

* ``pre_save`` encrypts a plaintext with the instance's primary key;
* a data descriptor keeps the loaded ciphertext and decrypts it on first access;
* ``get_db_prep_value`` only passes through ciphertext it made itself, so a
  ``QuerySet.update(token="x")`` that would store plaintext fails closed.

The value in memory is a plain ``str``; on disk it is ``enc:v1:<kid>:...``.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import FieldError
from django.db import models
from django.db.models.query_utils import DeferredAttribute

from .crypto import DecryptionError, get_keyring


class Ciphertext(str):
    """A value exactly as stored: only this type may reach the database."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Ciphertext(<hidden>)"


class EncryptedValueError(ValueError):
    """Plaintext tried to reach the database without going through Model.save()."""


class _EncryptedAttribute(DeferredAttribute):
    """Decrypts lazily with the instance's pk; a data descriptor so it always runs.

    ``instance.__dict__`` holds the attribute as loaded (a ``Ciphertext``) until the
    first read decrypts it; the loaded ciphertext is kept beside it so that saving
    an unassigned secret writes the same bytes back instead of re-encrypting.
    """

    def __get__(self, instance: models.Model | None, cls: type | None = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Ciphertext):
            field: EncryptedTextField = self.field  # type: ignore[assignment]
            value = field.decrypt_for(instance, value)
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance: models.Model, value: Any) -> None:
        field: EncryptedTextField = self.field  # type: ignore[assignment]
        # A Ciphertext comes from the database; anything else is a new assignment,
        # which is encrypted afresh (a new nonce) on the next save.
        instance.__dict__[field.loaded_attname] = value if isinstance(value, Ciphertext) else None
        instance.__dict__[field.attname] = value


class EncryptedTextField(models.TextField):
    """A secret at rest. Lookups other than ``isnull`` are refused."""

    description = "Text encrypted with AES-256-GCM, bound to its row and column"
    descriptor_class = _EncryptedAttribute

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._refused_options = [name for name in ("unique", "db_index", "primary_key") if kwargs.get(name)]
        super().__init__(*args, **kwargs)

    def check(self, **kwargs: Any) -> list[checks.CheckMessage]:
        errors = super().check(**kwargs)
        for name in self._refused_options:
            errors.append(
                checks.Error(
                    f"EncryptedTextField does not support {name}=True: ciphertext is random "
                    "per write, so it cannot be indexed or compared.",
                    obj=self,
                    id="clinics.E010",
                )
            )
        return errors

    @property
    def label(self) -> str:
        # app_label.model.field: part of the key derivation and associated data,
        # so it must never change once data exists.
        return f"{self.model._meta.app_label}.{self.model._meta.model_name}.{self.name}"

    @property
    def loaded_attname(self) -> str:
        return "_encrypted_loaded_" + self.attname

    def decrypt_for(self, instance: models.Model, stored: str) -> str:
        try:
            return get_keyring().decrypt(stored, label=self.label, row_id=str(instance.pk))
        except DecryptionError as exc:
            raise type(exc)(
                label=f"{instance._meta.object_name}.{self.name}",
                row_id=str(instance.pk),
                kid=exc.kid,
            ) from None

    def encrypt_for(self, instance: models.Model, plaintext: str) -> Ciphertext:
        if instance.pk is None:
            raise EncryptedValueError(
                f"{instance._meta.object_name}.{self.name} needs a primary key known before "
                "saving (use a UUID default) to bind its ciphertext to the row."
            )
        return Ciphertext(get_keyring().encrypt(plaintext, label=self.label, row_id=str(instance.pk)))

    def pre_save(self, model_instance: models.Model, add: bool) -> Ciphertext | None:
        value = model_instance.__dict__.get(self.attname)
        if value is None or isinstance(value, Ciphertext):
            return value
        loaded = model_instance.__dict__.get(self.loaded_attname)
        if loaded is not None:
            # Read but not assigned since it was loaded: write the same bytes back.
            return loaded
        ciphertext = self.encrypt_for(model_instance, str(value))
        model_instance.__dict__[self.loaded_attname] = ciphertext
        return ciphertext

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        if value is None or isinstance(value, Ciphertext):
            return None if value is None else str(value)
        raise EncryptedValueError(
            f"Plaintext for encrypted field {self.model._meta.object_name}.{self.name} can only "
            "be written through Model.save()."
        )

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Ciphertext | None:
        return None if value is None else Ciphertext(value)

    def to_python(self, value: Any) -> Any:
        if value is None or isinstance(value, Ciphertext):
            return value
        return str(value)

    def value_to_string(self, obj: models.Model) -> str | None:
        # dumpdata writes what is on disk, never the plaintext.
        value = obj.__dict__.get(self.attname)
        if value is None or isinstance(value, Ciphertext):
            return value
        return str(self.pre_save(obj, add=False))

    def get_lookup(self, lookup_name: str) -> Any:
        if lookup_name != "isnull":
            raise FieldError(
                f"Encrypted field {self.name} does not support the '{lookup_name}' lookup: "
                "filtering on ciphertext never matches and would send the search term to SQL."
            )
        return super().get_lookup(lookup_name)

    def get_transform(self, lookup_name: str) -> Any:
        raise FieldError(f"Encrypted field {self.name} does not support transforms.")
