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

from typing import Any, TypeVar

from django.core import checks
from django.core.exceptions import FieldError
from django.db import models
from django.db.models.query_utils import DeferredAttribute

from .crypto import DecryptionError, Keyring, get_keyring

_M = TypeVar("_M", bound=models.Model)
# The set and get types django-stubs gives a model attribute (str, or str | None when null=True).
_ST = TypeVar("_ST", contravariant=True)
_GT = TypeVar("_GT", covariant=True)


class Ciphertext(str):
    """A value exactly as stored: only this type may reach the database."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "Ciphertext(<hidden>)"


class PendingCiphertext(str):
    """A string shaped like `enc:v1:...` coming from deserialisation (loaddata, full_clean).

    It is only trusted as ciphertext if it decrypts for the row it is saved to;
    otherwise it is a plaintext that merely looks like one, and gets encrypted.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "PendingCiphertext(<hidden>)"


class EncryptedValueError(ValueError):
    """Plaintext tried to reach the database without going through Model.save()."""


class EncryptedFieldsQuerySet(models.QuerySet[_M]):
    """Refuses `update()` of an encrypted field with anything but ciphertext or NULL.

    `get_db_prep_value` already refuses a plain string, but an expression such as
    `Value("x")` carries its own output field and would reach SQL as plaintext.
    """

    def update(self, **kwargs: Any) -> int:
        for name, value in kwargs.items():
            field = self.model._meta.get_field(name)
            if isinstance(field, EncryptedTextField) and not (value is None or isinstance(value, Ciphertext)):
                raise EncryptedValueError(
                    f"{self.model._meta.object_name}.{name} is encrypted: assign it on the instance and save()."
                )
        return super().update(**kwargs)

    update.alters_data = True  # type: ignore[attr-defined]


class _EncryptedAttribute(DeferredAttribute):
    """Decrypts lazily with the row id the ciphertext is bound to; a data descriptor so it always runs.

    ``instance.__dict__`` holds the attribute as loaded (a ``Ciphertext``) until the
    first read decrypts it; the loaded ciphertext and the pk it was bound to are
    kept beside it, so saving an unassigned secret writes the same bytes back, and
    a copy saved under a new pk (``obj.pk = None; obj.save()``) is re-encrypted for it.
    """

    def _encrypted_field(self) -> EncryptedTextField[Any, Any]:
        field = self.field
        if not isinstance(field, EncryptedTextField):
            raise TypeError(
                f"{type(self).__name__} serves EncryptedTextField only, not {type(field).__name__}."
            )
        return field

    def __get__(self, instance: models.Model | None, cls: type | None = None) -> Any:
        if instance is None:
            return self
        value = super().__get__(instance, cls)
        if isinstance(value, Ciphertext):
            field = self._encrypted_field()
            value = field.decrypt_for(instance, value, row_id=field.bound_row_id(instance))
            instance.__dict__[self.field.attname] = value
        return value

    def __set__(self, instance: models.Model, value: Any) -> None:
        field = self._encrypted_field()
        # A Ciphertext comes from the database; anything else is a new assignment,
        # which is encrypted afresh (a new nonce) on the next save.
        if isinstance(value, Ciphertext):
            instance.__dict__[field.loaded_attname] = value
            instance.__dict__[field.bound_attname] = instance.__dict__.get(instance._meta.pk.attname)
        else:
            instance.__dict__[field.loaded_attname] = None
        instance.__dict__[field.attname] = value


class EncryptedTextField(models.TextField[_ST, _GT]):
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

    @property
    def bound_attname(self) -> str:
        return "_encrypted_bound_" + self.attname

    def bound_row_id(self, instance: models.Model) -> str:
        bound = instance.__dict__.get(self.bound_attname)
        return str(instance.pk if bound is None else bound)

    def is_set(self, instance: models.Model) -> bool:
        """Whether the instance holds a non-empty secret, without decrypting one still as loaded."""
        if self.attname not in instance.__dict__:  # deferred: load it (and decrypt) as a read would
            return bool(getattr(instance, self.attname))
        value = instance.__dict__[self.attname]
        if isinstance(value, Ciphertext):
            return not Keyring.seals_empty_text(value)
        return bool(value)

    def decrypt_for(self, instance: models.Model, stored: str, *, row_id: str | None = None) -> str:
        row_id = str(instance.pk) if row_id is None else row_id
        try:
            return get_keyring().decrypt(stored, label=self.label, row_id=row_id)
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
        if value is None:
            return None
        row_id = str(model_instance.pk)
        bound = self.bound_row_id(model_instance)
        if isinstance(value, Ciphertext):
            if bound == row_id:
                return value
            # Saved under another pk (a copy): re-encrypt for the new row.
            value = self.decrypt_for(model_instance, value, row_id=bound)
        elif isinstance(value, PendingCiphertext):
            try:
                self.decrypt_for(model_instance, value)
            except DecryptionError:
                value = str(value)  # a plaintext that only looks like ciphertext
            else:
                return self._remember(model_instance, Ciphertext(value))
        else:
            loaded = model_instance.__dict__.get(self.loaded_attname)
            if isinstance(loaded, Ciphertext) and bound == row_id:
                # Read but not assigned since it was loaded: write the same bytes back.
                return loaded
        return self._remember(model_instance, self.encrypt_for(model_instance, str(value)))

    def _remember(self, instance: models.Model, ciphertext: Ciphertext) -> Ciphertext:
        instance.__dict__[self.loaded_attname] = ciphertext
        instance.__dict__[self.bound_attname] = instance.pk
        return ciphertext

    def get_db_prep_value(self, value: Any, connection: Any, prepared: bool = False) -> Any:
        # PendingCiphertext only reaches here on a raw save (loaddata of dumpdata output).
        if value is None or isinstance(value, (Ciphertext, PendingCiphertext)):
            return None if value is None else str(value)
        raise EncryptedValueError(
            f"Plaintext for encrypted field {self.model._meta.object_name}.{self.name} can only "
            "be written through Model.save()."
        )

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Ciphertext | None:
        return None if value is None else Ciphertext(value)

    def to_python(self, value: Any) -> Any:
        if value is None or isinstance(value, (Ciphertext, PendingCiphertext)):
            return value
        text = str(value)
        if text.startswith("enc:v1:"):
            return PendingCiphertext(text)
        return text

    def value_to_string(self, obj: models.Model) -> str | None:  # type: ignore[override]
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
