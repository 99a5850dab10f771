"""Shared personas and clients (healthchecks-style): one clinic's admin and staff,
another clinic's admin, an inactive clinic's admin, a user with no clinic, a superuser."""

from __future__ import annotations

import pytest
from axes.handlers.proxy import AxesProxyHandler
from django.core.cache import cache
from django_tasks import default_task_backend
from rest_framework.test import APIClient

from clinics import services
from clinics.models import ApiToken, Clinic, User

PASSWORD = "correct-horse-battery-9"  # noqa: S105  (test persona)


@pytest.fixture(autouse=True)
def _fresh_cache():
    # Throttles and the status-refresh gate live in the cache: no test sees another's.
    # The sign-in limiter's handler keeps the cache it was made with: a test that pointed
    # the default cache elsewhere (Redis) must not leave it counting there for the next.
    AxesProxyHandler.get_implementation(force=True)
    cache.clear()
    yield
    cache.clear()


# Tests record tasks without running them (test_settings); these run them.
IMMEDIATE_TASKS = {
    "default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend", "QUEUES": ["default"]}
}
DATABASE_TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend", "QUEUES": ["default"]}}


@pytest.fixture
def tasks_run_inline(settings):
    """Every task runs as it is enqueued, like a worker with no delay (django.tasks' immediate backend)."""
    settings.TASKS = IMMEDIATE_TASKS


@pytest.fixture
def database_tasks(settings):
    """The production backend: enqueueing writes a task row in the caller's transaction."""
    settings.TASKS = DATABASE_TASKS


@pytest.fixture
def queued_tasks():
    """The tasks enqueued during the test (the default test backend only records them)."""
    default_task_backend.clear()  # type: ignore[attr-defined]
    yield default_task_backend.results  # type: ignore[attr-defined]
    default_task_backend.clear()  # type: ignore[attr-defined]


@pytest.fixture
def clinic(db) -> Clinic:
    return services.clinic_create(name="Clínica San Salvador", city="San Salvador")


@pytest.fixture
def other_clinic(db) -> Clinic:
    return services.clinic_create(name="Clínica Santa Ana", city="Santa Ana")


@pytest.fixture
def inactive_clinic(db) -> Clinic:
    clinic = services.clinic_create(name="Clínica Cerrada")
    Clinic.objects.filter(pk=clinic.pk).update(is_active=False)
    clinic.refresh_from_db()
    return clinic


def _user(clinic: Clinic | None, email: str, role: str = User.Role.ADMIN) -> User:
    if clinic is None:
        return User.objects.create_user(email=email, password=PASSWORD)
    return services.clinic_add_user(clinic=clinic, email=email, password=PASSWORD, role=role)


@pytest.fixture
def clinic_admin(clinic) -> User:
    return _user(clinic, "admin@sansalvador.example")


@pytest.fixture
def clinic_staff(clinic) -> User:
    return _user(clinic, "staff@sansalvador.example", User.Role.STAFF)


@pytest.fixture
def other_clinic_admin(other_clinic) -> User:
    return _user(other_clinic, "admin@santaana.example")


@pytest.fixture
def inactive_clinic_admin(inactive_clinic) -> User:
    return _user(inactive_clinic, "admin@cerrada.example")


@pytest.fixture
def clinicless_user(db) -> User:
    return _user(None, "nobody@example.com")


@pytest.fixture
def superuser(db) -> User:
    return User.objects.create_superuser(email="root@clinics.example", password=PASSWORD)


@pytest.fixture
def anon_client() -> APIClient:
    return APIClient(HTTP_ACCEPT_LANGUAGE="en")


@pytest.fixture
def api_client():
    """`api_client(user)`: an APIClient authenticated with a real token of that user."""

    def make(user: User, *, keyword: str = "Token") -> APIClient:
        _token, key = ApiToken.issue(user)
        client = APIClient(HTTP_ACCEPT_LANGUAGE="en")
        client.credentials(HTTP_AUTHORIZATION=f"{keyword} {key}")
        return client

    return make


def pytest_runtest_setup(item: pytest.Item) -> None:
    from django.conf import settings

    on_postgresql = "postgresql" in settings.DATABASES["default"]["ENGINE"]
    if item.get_closest_marker("postgres") and not on_postgresql:
        pytest.skip("needs PostgreSQL: run with DATABASE_URL=postgres://...")
    # A server stack started on its own SQLite file runs in the SQLite run; the PostgreSQL run
    # (the same suite again, CI's second stage) would only repeat it.
    if item.get_closest_marker("sqlite") and on_postgresql:
        pytest.skip("runs its own SQLite stack: covered by the run without DATABASE_URL")
