"""The benchmark's floor: what `django-admin startproject` gives, plus one view.

Nothing here is tuned: the middleware list and apps are startproject's, the
database is the benchmark's PostgreSQL with persistent connections, and the one
view runs `SELECT 1` and returns a small JSON body. Every endpoint is reported
as a ratio to this app, measured in the same run, so tuning our own stack (or
our own /healthz/) cannot move the yardstick.
"""

from __future__ import annotations

import os

import environ

SECRET_KEY = os.environ.get("SECRET_KEY", "floor-not-secret")  # only ever serves SELECT 1
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "bench.floor.urls"
WSGI_APPLICATION = "bench.floor.wsgi.application"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# The benchmark's database (FLOOR_DATABASE_URL), with persistent connections as the product has.
DATABASES = {"default": environ.Env().db_url("FLOOR_DATABASE_URL")}
DATABASES["default"]["CONN_MAX_AGE"] = 600

USE_TZ = True
STATIC_URL = "static/"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
