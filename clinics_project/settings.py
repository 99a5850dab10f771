"""Settings for the Clinics monolith, read from the environment (django-environ).

Every variable of the contract's table is read here; `.env.example` lists them.
The OS environment wins over an optional `.env` file in the project root.
"""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import environ
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

BASE_DIR = Path(__file__).resolve().parent.parent


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env", overwrite=False)

DEBUG = env.bool("DEBUG", default=False)

if DEBUG:
    # Development values only: with DEBUG off a missing SECRET_KEY is a start-up error.
    SECRET_KEY = env("SECRET_KEY", default="django-insecure-development-only-key-do-not-use")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
else:
    SECRET_KEY = env("SECRET_KEY")
    ALLOWED_HOSTS = env.list("ALLOWED_HOSTS")
    if not ALLOWED_HOSTS:
        raise ImproperlyConfigured("Set ALLOWED_HOSTS when DEBUG is off.")

# Newest key first; every listed key still decrypts. Parsed and checked by
# common.crypto at start-up (see docs in README and common/crypto.py).
FIELD_ENCRYPTION_KEYS = env.list("FIELD_ENCRYPTION_KEYS", default=[])
# The audit trail's fingerprints of secrets use a key of their own (never the encryption keys).
# Empty: derived from SECRET_KEY under its own label.
AUDIT_FINGERPRINT_KEY = env("AUDIT_FINGERPRINT_KEY", default="")

META_GRAPH_URL = env("META_GRAPH_URL", default="https://graph.facebook.com/v26.0").rstrip("/")
# Development only: Meta is the fake Graph server scripts/run starts (devtools/fake_graph.py).
# Pages then say so in a banner and show the code the fake "sent".
META_SIMULATED = DEBUG and env.bool("META_SIMULATED", default=False)
# With DEBUG off, a Graph URL that is not Meta's is refused at start-up (an access token
# must never be sent to a stray host), unless the operator says so (an egress proxy, a staging fake).
META_GRAPH_ALLOW_ANY_HOST = env.bool("META_GRAPH_ALLOW_ANY_HOST", default=False)
if not DEBUG:
    _graph = urlsplit(META_GRAPH_URL)
    _graph_host = _graph.hostname or ""
    if not META_GRAPH_ALLOW_ANY_HOST and _graph_host != "graph.facebook.com":
        raise ImproperlyConfigured(
            f"META_GRAPH_URL points at {_graph_host or 'no host'}, not Meta's graph.facebook.com. "
            "Set META_GRAPH_ALLOW_ANY_HOST=true if that is intended."
        )
    # Any host still means https: access tokens must never cross a network in clear text.
    # Plain http only to this machine itself (a local egress proxy, the e2e tests' fake Meta).
    if _graph.scheme != "https" and not (_graph_host == "localhost" or is_loopback(_graph_host)):
        raise ImproperlyConfigured(
            "META_GRAPH_URL must start with https:// when DEBUG is off (plain http only to "
            "127.0.0.1, ::1 or localhost): access tokens are sent with every Graph call."
        )
META_APP_SECRET = env("META_APP_SECRET", default="")
# (connect, read) seconds for every Graph call: a hung Meta must never hang a worker.
META_CONNECT_TIMEOUT = env.float("META_CONNECT_TIMEOUT", default=5.0)
META_READ_TIMEOUT = env.float("META_READ_TIMEOUT", default=15.0)
# Every request that calls Meta answers within this many seconds, whatever Meta does
# (common.deadline); keep it below gunicorn's --timeout (60 in the README).
REQUEST_DEADLINE_SECONDS = env.float("REQUEST_DEADLINE_SECONDS", default=25.0)
# How long a status read from Meta stays fresh: polling never asks Meta more often.
WHATSAPP_STATUS_REFRESH_SECONDS = env.int("WHATSAPP_STATUS_REFRESH_SECONDS", default=5)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # Background tasks (Django 6's django.tasks, backported) and their database queue.
    "django_tasks",
    "django_tasks_db",
    "axes",
    # Imports run one way, bottom to top: common <- whatsapp <- messaging <- clinics (see .importlinter).
    "common",
    "whatsapp",
    "messaging",
    "clinics",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "common.deadline.RequestDeadlineMiddleware",
    "common.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    # Before anything reads a body (CSRF, views): chunked bodies are refused, 411.
    "common.middleware.RequireContentLengthMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # Who, through which door, from where: what the audit trail's rows record.
    "common.audit.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, so it sees every door's answer: a locked-out sign-in becomes a 429.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "clinics_project.urls"
WSGI_APPLICATION = "clinics_project.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.i18n",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "clinics.context_processors.meta_mode",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
DATABASES["default"]["ATOMIC_REQUESTS"] = False
# Persistent connections (checked before reuse): a new PostgreSQL connection per request costs throughput.
DATABASES["default"]["CONN_MAX_AGE"] = env.int("CONN_MAX_AGE", default=60)
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The README's "Database connections" section says what each option needs.
    options = DATABASES["default"].setdefault("OPTIONS", {})
    if env.bool("DB_PREPARED_STATEMENTS", default=True):
        # Server-side binding lets psycopg prepare a statement once it ran DB_PREPARE_THRESHOLD
        # times on a connection; PostgreSQL then skips parsing and planning it. Behind
        # PgBouncer in transaction mode this needs PgBouncer >= 1.21 with max_prepared_statements.
        options["server_side_binding"] = True
        options["prepare_threshold"] = env.int("DB_PREPARE_THRESHOLD", default=5)
    DB_CONNECTION_CHECK = env.str("DB_CONNECTION_CHECK", default="query")
    if DB_CONNECTION_CHECK == "pool":
        # Django's connection pool (psycopg-pool), which checks each connection it lends with a round trip.
        options["pool"] = True
        DATABASES["default"]["CONN_MAX_AGE"] = 0
    elif DB_CONNECTION_CHECK != "query":  # "query": Django's own SELECT 1 before each request's first query
        raise ImproperlyConfigured("DB_CONNECTION_CHECK must be query or pool.")
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Development: the server and the task worker share one file. WAL lets reads run beside
    # the writer; IMMEDIATE takes the write lock when a transaction begins, so a writer waits
    # its turn (up to `timeout` seconds) instead of failing midway with "database is locked".
    options = DATABASES["default"].setdefault("OPTIONS", {})
    options.setdefault("transaction_mode", "IMMEDIATE")
    options.setdefault("timeout", 20)
    options.setdefault("init_command", "PRAGMA journal_mode=WAL;PRAGMA synchronous=NORMAL;")
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# API tokens are read through the cache (clinics.token_cache) only when every process shares
# it: a local-memory cache is one per process, where a write made by another process (the
# worker, another gunicorn worker) could not end a stale copy.
API_TOKEN_CACHE = CACHES["default"]["BACKEND"] not in (
    "django.core.cache.backends.locmem.LocMemCache",
    "django.core.cache.backends.dummy.DummyCache",
)

AUTH_USER_MODEL = "clinics.User"
# django-axes first: a locked-out attempt is refused before any password is hashed.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/settings/"
LOGOUT_REDIRECT_URL = "login"
# A password reset link works once (Django's token covers the password) and for an hour.
PASSWORD_RESET_TIMEOUT = 60 * 60

LANGUAGE_CODE = "es"
LANGUAGES = [("es", _("Spanish")), ("en", _("English"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Background work: webhook deliveries, health checks, warning e-mails. The database
# backend writes the task row in the caller's transaction (nothing is lost if no
# worker runs) and `manage.py db_worker` processes it; TASKS_BACKEND switches to
# another backend of the same framework (README, "Background work") with no code change.
TASKS: dict[str, Any] = {
    "default": {
        "BACKEND": env("TASKS_BACKEND", default="django_tasks_db.DatabaseBackend"),
        "QUEUES": ["default"],
    }
}
# A delivery's processing (or a warning e-mail) that failed is tried again after
# TASK_RETRY_BASE_SECONDS, doubling each time, at most TASK_RETRY_ATTEMPTS times.
TASK_RETRY_ATTEMPTS = env.int("TASK_RETRY_ATTEMPTS", default=8)
TASK_RETRY_BASE_SECONDS = env.float("TASK_RETRY_BASE_SECONDS", default=30.0)
# A worker that died mid-delivery leaves it "processing"; after this long
# `manage.py whatsapp_requeue_deliveries` queues it again.
WHATSAPP_DELIVERY_LEASE_SECONDS = env.int("WHATSAPP_DELIVERY_LEASE_SECONDS", default=600)
# Processed Meta deliveries older than this are deleted by the daily `manage.py clinics_cleanup`.
# Never under 7 days: Meta resends a delivery for up to 7 days, and the markers that keep
# a resent event from being applied twice go with the delivery.
WEBHOOK_RETENTION_DAYS = env.int("WEBHOOK_RETENTION_DAYS", default=30)
if WEBHOOK_RETENTION_DAYS < 7:
    raise ImproperlyConfigured(
        "WEBHOOK_RETENTION_DAYS must be at least 7 (Meta resends deliveries for 7 days)."
    )

# The clinic's bot (messaging): only https:// to a public address unless this is on
# (development and tests, where the bot runs on this machine).
BOT_URL_ALLOW_PRIVATE = env.bool("BOT_URL_ALLOW_PRIVATE", default=False)
# Multiplies the bot deliveries' retry delays and their 24-hour horizon: 1 in production;
# the end-to-end tests shrink it to see a delivery retried and then dead within seconds.
BOT_RETRY_SCALE = env.float("BOT_RETRY_SCALE", default=1.0)
# Conversations' messages older than this many days are deleted by the daily clean-up.
MESSAGE_RETENTION_DAYS = env.int("MESSAGE_RETENTION_DAYS", default=365)

# `manage.py run_worker` writes its heartbeat every WORKER_HEARTBEAT_SECONDS; a worker silent
# for WORKER_STALE_SECONDS is dead (its running task is taken again; /healthz/?worker=1 says 503);
# after a database error it starts again within at most WORKER_MAX_BACKOFF_SECONDS (common/workers.py).
WORKER_HEARTBEAT_SECONDS = env.float("WORKER_HEARTBEAT_SECONDS", default=5.0)
WORKER_STALE_SECONDS = env.int("WORKER_STALE_SECONDS", default=30)
WORKER_MAX_BACKOFF_SECONDS = env.float("WORKER_MAX_BACKOFF_SECONDS", default=30.0)

# Warning e-mails (token expiry, a broken connection): the console in development.
_email = env.email("EMAIL_URL", default="consolemail://")
EMAIL_BACKEND = _email["EMAIL_BACKEND"]
EMAIL_HOST = _email.get("EMAIL_HOST") or "localhost"
EMAIL_PORT = _email.get("EMAIL_PORT") or 25
EMAIL_HOST_USER = _email.get("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = _email.get("EMAIL_HOST_PASSWORD") or ""
EMAIL_USE_TLS = bool(_email.get("EMAIL_USE_TLS"))
EMAIL_USE_SSL = bool(_email.get("EMAIL_USE_SSL"))
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Clinics <no-reply@clinics.invalid>")
# A mail server that does not answer must not hold a worker for long.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=15)

# The API takes small JSON documents; the webhook reads its own body with its
# own 3 MB limit (Meta's largest payload) before Django's limit applies.
DATA_UPLOAD_MAX_MEMORY_SIZE = env.int("DATA_UPLOAD_MAX_MEMORY_SIZE", default=256 * 1024)
WHATSAPP_WEBHOOK_MAX_BYTES = 3 * 1024 * 1024
# Per clinic: authentic deliveries beyond these answer 429 (Meta retries later; whatsapp/ingress.py).
WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE = env.int("WHATSAPP_WEBHOOK_DELIVERIES_PER_MINUTE", default=600)
WHATSAPP_WEBHOOK_BYTES_PER_HOUR = env.int("WHATSAPP_WEBHOOK_BYTES_PER_HOUR", default=50 * 1024 * 1024)

# How many proxies in front append to X-Forwarded-For (nginx alone: 1). Only that many
# entries are believed; 0 means the connection's own address (common/http.py).
NUM_PROXIES = env.int("NUM_PROXIES", default=0)

# API tokens end this many days after they were issued (then 401).
API_TOKEN_TTL_DAYS = env.int("API_TOKEN_TTL_DAYS", default=30)

# The sign-in limiter, one for every door (API token, /accounts/login/, /admin/login/):
# django-axes, a maintained library made for exactly this, rather than our own counters.
# Failures only, in two buckets: per client address, and per account (the canonical
# e-mail) and address together. SIGN_IN_FAILURE_LIMIT failures in either lock that
# bucket for the cool-off. No bucket is the account alone: failures from other
# addresses never keep its owner out (anyone could lock any account, superusers
# included). Instead, SIGN_IN_ALERT_FAILURES failures on one account within an hour,
# from any addresses, send its user and the clinic's admins one e-mail (clinics.signin).
# The cache handler keeps the counters in the shared cache (Redis in production),
# so every server counts in the same buckets, and no sign-in writes to the database.
AXES_HANDLER = "clinics.signin.SignInHandler"
AXES_FAILURE_LIMIT = env.int("SIGN_IN_FAILURE_LIMIT", default=10)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("SIGN_IN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = ["ip_address", ["username", "ip_address"]]
SIGN_IN_ALERT_FAILURES = env.int("SIGN_IN_ALERT_FAILURES", default=50)
# Every door passes the e-mail as `username` (Django's sign-in forms, authenticate()
# in the API); axes would otherwise look for USERNAME_FIELD's name, `email`.
AXES_USERNAME_FORM_FIELD = "username"
AXES_USERNAME_CALLABLE = "clinics.signin.sign_in_account"
AXES_CLIENT_IP_CALLABLE = "clinics.signin.sign_in_address"
AXES_LOCKOUT_CALLABLE = "clinics.signin.sign_in_locked_out"
# A success resets nothing: an attacker with one account of their own could
# otherwise wipe their address's count by signing in to it between guesses.
AXES_RESET_ON_SUCCESS = False
# Attempts refused while locked are not counted: the lock ends one cool-off after
# the failure that set it (so Retry-After is true), and nobody can keep an account
# locked forever by hammering it.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
# The counters live in the cache; axes' database tables stay empty, so no admin pages.
AXES_ENABLE_ADMIN = False
# axes warns when its cache is not shared between processes (local memory): with DEBUG
# off that warning stands (check --deploy fails without CACHE_URL); the development
# server is one process, where local memory counts right.
SILENCED_SYSTEM_CHECKS = ["axes.W001"] if DEBUG else []

REST_FRAMEWORK: dict[str, Any] = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # A bot key (its own shape) first; every other key goes on to the members' tokens.
        "clinics.bot_keys.BotKeyAuthentication",
        "clinics.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "clinics.permissions.IsClinicMember",
    ],
    "DEFAULT_PARSER_CLASSES": ["common.api.parsers.SafeJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "clinics.api.exceptions.api_exception_handler",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # The same client address as common.http.client_address, should a DRF throttle count.
    "NUM_PROXIES": NUM_PROXIES,
}
if DEBUG:
    REST_FRAMEWORK["DEFAULT_RENDERER_CLASSES"].append("rest_framework.renderers.BrowsableAPIRenderer")

SPECTACULAR_SETTINGS = {
    "TITLE": "Clinics API",
    "DESCRIPTION": "Clinic settings and WhatsApp Business (Meta Cloud API) connection.",
    "VERSION": "1.0.0",
    # Otherwise the schema endpoint documents (and fuzzers fuzz) itself.
    "SERVE_INCLUDE_SCHEMA": False,
    # One name for the connection status wherever it appears (settings, endpoints 5-9).
    "ENUM_NAME_OVERRIDES": {"WhatsAppStatusEnum": "whatsapp.models.WhatsAppStatus"},
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from our own static files: no CDN, the product works on a closed network.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

# Behind TLS (a load balancer that sets X-Forwarded-Proto) in production.
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz/?$"]
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
# The header alone submits nothing; hstspreload.org submission stays an operator decision.
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=not DEBUG)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = not DEBUG
CSRF_COOKIE_SECURE = not DEBUG
SESSION_COOKIE_HTTPONLY = True
X_FRAME_OPTIONS = "DENY"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # urllib3 logs each request's URL at DEBUG, and debug_token's URL carries the access token.
        "urllib3": {"level": "INFO"},
    },
}
