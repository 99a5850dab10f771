"""Test settings: fast hasher, a fixed encryption keyring, local memory cache."""

from __future__ import annotations

import os

# Tests run with DEBUG off like production, so they need the values production
# must provide; these are fixed test values, never used anywhere else.
os.environ.setdefault("SECRET_KEY", "test-only-secret-key-0123456789abcdefghijklmnopqrstuvwxyz")
os.environ.setdefault("ALLOWED_HOSTS", "testserver,localhost,127.0.0.1")
os.environ.setdefault("SECURE_SSL_REDIRECT", "false")
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEYS",
    "test2:D1Uff5ELWfQYuq27POXu8S07C0t5AA8r4x5X5MlgsXs,test1:UNphhrjKVHj_70vFZ5f9tbPqh2d3iq08S7EIZhK2PvE",
)
os.environ.setdefault("META_GRAPH_URL", "https://graph.facebook.com/v26.0")

from .settings import *  # noqa: F403
from .settings import env

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
CACHES = {"default": env.cache("CACHE_URL", default="locmemcache://")}
# Tests run in one process, which its local-memory cache serves whole: the token cache is on.
API_TOKEN_CACHE = True
# Tests run in one process, where the sign-in limiter's local-memory counters are right.
SILENCED_SYSTEM_CHECKS = ["axes.W001"]
EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
# Tasks are recorded, not run: a test that needs them run asks for the immediate
# backend (or the real database backend and a worker) with the fixtures in conftest.py.
TASKS = {"default": {"BACKEND": "django_tasks.backends.dummy.DummyBackend", "QUEUES": ["default"]}}
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
# Short timeouts keep the fault tests fast; the client's behaviour is the same.
META_CONNECT_TIMEOUT = 1.0
META_READ_TIMEOUT = 1.0
