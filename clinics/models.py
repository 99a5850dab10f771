from __future__ import annotations

import hashlib
import secrets
import string
import unicodedata
import uuid
from datetime import datetime, timedelta
from typing import Any, ClassVar

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.db import models, transaction
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext_lazy as _

from common.audit import audit_record, current_context
from common.outbox import OutboxRow

from . import token_cache, validators

SLUG_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
SLUG_SUFFIX_LENGTH = 6
SLUG_BASE_MAX_LENGTH = 60


def make_clinic_slug(name: str) -> str:
    """ASCII-folded, URL-safe name + '-' + 6 random [a-z0-9]: `clinica-san-salvador-abc123`."""
    base = slugify(name)[:SLUG_BASE_MAX_LENGTH].strip("-") or "clinica"
    suffix = "".join(secrets.choice(SLUG_SUFFIX_ALPHABET) for _ in range(SLUG_SUFFIX_LENGTH))
    return f"{base}-{suffix}"


class Clinic(models.Model):
    class SubscriptionPlan(models.TextChoices):
        FREE = "free", _("Free")
        BASIC = "basic", _("Basic")
        PRO = "pro", _("Pro")
        ENTERPRISE = "enterprise", _("Enterprise")

    # A UUID is known before insert: encrypted fields bind ciphertext to the row id.
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # Free text shown to people: no hidden character (common.validators.validate_plain_text),
    # whoever writes it (the doors normalise with clinics.validators; the model
    # checks again for every other writer, such as the commands).
    name = models.CharField(
        _("name"), max_length=validators.NAME_MAX_LENGTH, validators=[validators.validate_plain_text]
    )
    # Set once at creation; a rename keeps it so links and bookmarks keep working.
    slug = models.SlugField(_("slug"), max_length=80, unique=True, editable=False)
    phone = models.CharField(
        _("phone"), max_length=20, blank=True, validators=[validators.validate_clinic_phone]
    )
    address = models.CharField(
        _("address"),
        max_length=validators.ADDRESS_MAX_LENGTH,
        blank=True,
        validators=[validators.validate_plain_text],
    )
    city = models.CharField(
        _("city"),
        max_length=validators.CITY_MAX_LENGTH,
        blank=True,
        validators=[validators.validate_plain_text],
    )
    # Free text too (superusers write it in admin, `create_clinic --country`).
    country = models.CharField(
        _("country"), max_length=100, blank=True, validators=[validators.validate_plain_text]
    )
    timezone = models.CharField(
        _("time zone"),
        max_length=64,
        default="America/El_Salvador",
        validators=[validators.validate_timezone],
    )
    currency = models.CharField(
        _("currency"), max_length=3, default="USD", validators=[validators.validate_currency]
    )
    logo_url = models.URLField(_("logo URL"), max_length=500, blank=True)
    # The language of the e-mails the clinic's admins get (the pages follow each browser).
    language = models.CharField(_("language"), max_length=8, choices=settings.LANGUAGES, default="es")
    bot_enabled = models.BooleanField(_("bot enabled"), default=False)
    is_active = models.BooleanField(_("active"), default=True)
    subscription_plan = models.CharField(
        _("subscription plan"),
        max_length=20,
        choices=SubscriptionPlan.choices,
        default=SubscriptionPlan.FREE,
    )
    subscription_expires_at = models.DateTimeField(_("subscription expires at"), null=True, blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = _("clinic")
        verbose_name_plural = _("clinics")

    def __str__(self) -> str:
        return self.name

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.slug:
            self.slug = make_clinic_slug(self.name)
        super().save(*args, **kwargs)


def canonical_email(email: str | None) -> str:
    """An e-mail as it is stored and looked up, on every door: NFKC, case-folded, trimmed.

    NFKC turns full-width letters and compatibility forms into their plain
    letters and composes combining marks (`e` + U+0301 is `é`); case folding is
    the Unicode comparison `lower()` is not (long s U+017F is `s`, `ß` is `ss`). NFKC runs
    again after folding because folding can leave a string that is not NFKC,
    and the form must be a fixed point: canonical(canonical(x)) == canonical(x).
    Two spellings that share this form are one account, and one sign-in bucket;
    any other spelling (dotless i U+0131 stays itself) is another address that reaches no one.
    """
    folded = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", email or "").casefold())
    return folded.strip()


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    @classmethod
    def normalize_email(cls, email: str | None) -> str:
        return canonical_email(email)

    def _create_user(self, email: str, password: str | None, **extra: Any) -> User:
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=canonical_email(email), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra: Any) -> User:
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create_user(email, password, **extra)

    def get_by_natural_key(self, username: str | None) -> User:
        # Stored canonical, looked up canonical: signing in with `Ana@Clinic.com` still works.
        return self.get(email=canonical_email(username))


class User(AbstractBaseUser, PermissionsMixin):
    """Signs in with email; belongs to one clinic as admin or staff (superusers may have none)."""

    class Role(models.TextChoices):
        ADMIN = "admin", _("Admin")
        STAFF = "staff", _("Staff")

    email = models.EmailField(_("email"), unique=True)
    full_name = models.CharField(
        _("full name"), max_length=150, blank=True, validators=[validators.validate_plain_text]
    )
    clinic = models.ForeignKey(
        Clinic,
        verbose_name=_("clinic"),
        on_delete=models.PROTECT,
        related_name="members",
        null=True,
        blank=True,
    )
    role = models.CharField(_("role"), max_length=10, choices=Role.choices, default=Role.STAFF)
    is_active = models.BooleanField(_("active"), default=True)
    # Django admin access (superusers); clinic roles are `role`.
    is_staff = models.BooleanField(_("admin site access"), default=False)
    date_joined = models.DateTimeField(_("date joined"), default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")
        constraints = [
            # The stored e-mail is canonical (every write goes through canonical_email).
            # The database adds its own wall behind that: no two rows whose e-mails
            # differ only by case, however they were written (a bulk update, raw SQL,
            # a future door that forgets the rule). A functional unique index rather
            # than a CHECK that email = LOWER(email): case folding is not lower-casing
            # (Cherokee folds to upper case), so such a CHECK would refuse canonical
            # e-mails, while two different canonical e-mails never share LOWER().
            models.UniqueConstraint(
                Lower("email"),
                name="clinics_user_email_lower_unique",
                violation_error_message=_("A user with this email already exists."),
            ),
        ]

    def __str__(self) -> str:
        return self.email

    def clean(self) -> None:
        super().clean()
        self.email = canonical_email(self.email)

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Every password change (the page, admin's password form, `changepassword`,
        # set_password anywhere) and every deactivation ends in this save, whoever
        # wrote it, so this is the one place where a user's API tokens end with them.
        # Every other change of a saved user ends the cached copies of its tokens.
        # (Django already ends the other browser sessions: a session keeps a hash of
        # the password.) A hash upgrade at sign-in is no change: Django clears
        # `_password` before that save.
        existing = not self._state.adding
        # set_password() keeps the raw password in `_password` until the save (not in django-stubs).
        password_changed = getattr(self, "_password", None) is not None
        with transaction.atomic():
            super().save(*args, **kwargs)
            if not existing:
                return
            # Cached copies of the user's tokens hold the user as it was (role, clinic, activity).
            tokens = ApiToken.objects.filter(user=self)
            token_cache.forget(tokens.values_list("digest", flat=True))
            ended = 0
            if password_changed or not self.is_active:
                ended, _by_model = tokens.delete()
            if password_changed:
                # Whoever set it (the page, a reset link, admin, `changepassword`): its one row.
                signed_out = current_context().who() == "anonymous"  # a reset link: the member
                audit_record(
                    clinic_id=self.clinic_id,
                    action="member.password_changed",
                    changes={"member": self.email, "api_tokens_ended": ended},
                    actor=self.email if signed_out else None,
                )

    @property
    def is_clinic_admin(self) -> bool:
        return self.clinic_id is not None and self.role == self.Role.ADMIN


class ApiToken(models.Model):
    """An API key. Only its SHA-256 is stored: a database leak gives no usable key."""

    KEY_BYTES = 32

    digest = models.CharField(_("digest"), max_length=64, unique=True, editable=False)
    # The first characters, to tell keys apart in admin without revealing them.
    prefix = models.CharField(_("prefix"), max_length=8, editable=False)
    user = models.ForeignKey(
        User, verbose_name=_("user"), on_delete=models.CASCADE, related_name="api_tokens"
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # Written at most once a minute per token (clinics.services.api_token_record_use).
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("API token")
        verbose_name_plural = _("API tokens")

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"

    @property
    def expires_at(self) -> datetime:
        # Counted from issue with today's setting, so shortening API_TOKEN_TTL_DAYS
        # ends the old tokens too.
        return self.created_at + timedelta(days=settings.API_TOKEN_TTL_DAYS)

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @classmethod
    def issue(cls, user: User) -> tuple[ApiToken, str]:
        key = secrets.token_urlsafe(cls.KEY_BYTES)
        token = cls.objects.create(user=user, digest=cls.hash_key(key), prefix=key[:8])
        return token, key


class BotKey(models.Model):
    """A key the clinic's bot sends with (endpoint 14c): it may read conversations and templates and send.

    Only its SHA-256 is stored, like an API token's. A key is `bot_` + 43 URL-safe
    characters: the shape alone tells it from a member's token (43 characters), so
    the authentication that knows bot keys steps aside for every other key.
    """

    KEY_BYTES = 32
    KEY_PREFIX = "bot_"
    # "bot_" and 8 characters of the key: how the clinic names a key to revoke it.
    PREFIX_LENGTH = 12

    clinic = models.ForeignKey(
        Clinic, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="bot_keys"
    )
    name = models.CharField(_("name"), max_length=100)
    digest = models.CharField(_("digest"), max_length=64, unique=True, editable=False)
    prefix = models.CharField(_("prefix"), max_length=PREFIX_LENGTH, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    # Written at most once a minute per key (clinics.bot_keys.bot_key_record_use).
    last_used_at = models.DateTimeField(_("last used"), null=True, blank=True)

    class Meta:
        verbose_name = _("bot key")
        verbose_name_plural = _("bot keys")
        constraints = [
            models.UniqueConstraint(fields=["clinic", "prefix"], name="clinics_botkey_unique_prefix"),
        ]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @classmethod
    def looks_like_key(cls, key: str) -> bool:
        return key.startswith(cls.KEY_PREFIX) and len(key) == len(cls.KEY_PREFIX) + 43


class Invitation(models.Model):
    """An admin's invitation to join the clinic (endpoint 19's POST, the team page).

    Only the SHA-256 of its link's token is stored. The link is one-use and ends
    `INVITATION_TTL` after it was (re)sent; resending gives a new token, which ends
    the old link. Nobody is created until the invited person accepts with a POST.
    """

    KEY_BYTES = 32

    clinic = models.ForeignKey(
        Clinic, verbose_name=_("clinic"), on_delete=models.CASCADE, related_name="invitations"
    )
    email = models.EmailField(_("email"))
    role = models.CharField(_("role"), max_length=10, choices=User.Role.choices, default=User.Role.STAFF)
    digest = models.CharField(_("digest"), max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(
        User,
        verbose_name=_("invited by"),
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent at"), default=timezone.now)
    expires_at = models.DateTimeField(_("expires at"))
    accepted_at = models.DateTimeField(_("accepted at"), null=True, blank=True)
    revoked_at = models.DateTimeField(_("revoked at"), null=True, blank=True)

    class Meta:
        verbose_name = _("invitation")
        verbose_name_plural = _("invitations")

    def __str__(self) -> str:
        return self.email

    @property
    def is_pending(self) -> bool:
        return self.accepted_at is None and self.revoked_at is None and self.expires_at > timezone.now()

    @staticmethod
    def hash_key(key: str) -> str:
        return hashlib.sha256(key.encode("utf-8")).hexdigest()

    @classmethod
    def new_key(cls) -> tuple[str, str]:
        """A fresh token and its digest."""
        key = secrets.token_urlsafe(cls.KEY_BYTES)
        return key, cls.hash_key(key)


class OutgoingEmail(OutboxRow):
    """An e-mail written in the transaction that causes it and sent by a worker (`clinics.mail`).

    Its body may hold a one-use link: it is emptied once the mail server accepted it.
    """

    class Kind(models.TextChoices):
        INVITATION = "invitation", _("Invitation")
        PASSWORD_RESET = "password_reset", _("Password reset")
        SIGN_IN_ALERT = "sign_in_alert", _("Failed sign-ins")

    kind = models.CharField(_("kind"), max_length=20, choices=Kind.choices)
    clinic = models.ForeignKey(
        Clinic, verbose_name=_("clinic"), on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    to = models.EmailField(_("to"))
    subject = models.CharField(_("subject"), max_length=300)
    body = models.TextField(_("body"), blank=True)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)

    class Meta:
        verbose_name = _("outgoing e-mail")
        verbose_name_plural = _("outgoing e-mails")
        indexes = [models.Index(fields=["state", "lease_expires_at"], name="clinics_email_sweep")]

    def __str__(self) -> str:
        return f"{self.kind} → {self.to}"
