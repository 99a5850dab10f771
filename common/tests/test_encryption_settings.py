"""FIELD_ENCRYPTION_KEYS: a missing or malformed keyring fails, loudly and without echoing keys.

Spec: ../shared/docs/encryption.md, "Keys" and "Tests that prove it" 7:
Keyring.parse, the clinics.E001 deploy check, start-up of the production
settings in a real subprocess (which must write nothing), and the key generator.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
from django.apps import apps
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import override_settings

from common.crypto import Keyring, KeyringError, generate_key_line

BASE_DIR = Path(__file__).resolve().parents[2]


def _line(kid: str, key: bytes) -> str:
    return f"{kid}:{base64.urlsafe_b64encode(key).rstrip(b'=').decode()}"


KEY_A = bytes(range(1, 33))
KEY_B = bytes(range(101, 133))
GOOD_A = _line("ka", KEY_A)
GOOD_B = _line("kb", KEY_B)
KEY_A_TEXT = GOOD_A.partition(":")[2]
KEY_B_TEXT = GOOD_B.partition(":")[2]
# 0xfb... encodes to '+' and '/' in standard base64: not base64url.
STANDARD_B64 = "kc:" + base64.b64encode(b"\xfb\xff" * 16).rstrip(b"=").decode()

MALFORMED = {
    "empty-string": "",
    "empty-list": [],
    "only-commas": " , ,",
    "list-of-blanks": ["", "  "],
    "no-colon": KEY_A_TEXT,
    "empty-kid": ":" + KEY_A_TEXT,
    "uppercase-kid": "KA:" + KEY_A_TEXT,
    "kid-too-long": "k" * 17 + ":" + KEY_A_TEXT,
    "kid-with-dot": "k.a:" + KEY_A_TEXT,
    "kid-with-space": "k a:" + KEY_A_TEXT,
    "kid-non-ascii": "kñ:" + KEY_A_TEXT,
    "key-31-bytes": _line("ka", KEY_A[:31]),
    "key-33-bytes": _line("ka", KEY_A + b"\x00"),
    "key-16-bytes": _line("ka", KEY_A[:16]),
    "key-empty": "ka:",
    "key-padded": GOOD_A + "=",
    "key-standard-base64": STANDARD_B64,
    "key-not-base64": "ka:" + "!" * 43,
    "key-hex": "ka:" + KEY_A.hex(),
    "duplicate-kid": [GOOD_A, _line("ka", KEY_B)],
    "same-key-two-kids": [GOOD_A, _line("kb", KEY_A)],
    "one-good-one-bad": [GOOD_A, _line("kb", KEY_B[:31])],
}


def _material(entries: str | list[str]) -> list[str]:
    """The secret parts of a keyring value: anything after a colon, or a bare key."""
    items = entries.split(",") if isinstance(entries, str) else entries
    parts = []
    for item in items:
        secret = item.partition(":")[2] if ":" in item else item
        if len(secret.strip()) >= 8:
            parts.append(secret.strip())
    return parts


def _assert_no_material(text: str, entries: str | list[str]) -> None:
    for secret in [*_material(entries), KEY_A_TEXT, KEY_B_TEXT]:
        for start in range(0, max(1, len(secret) - 11), 4):
            assert secret[start : start + 12] not in text


# -- Keyring.parse ------------------------------------------------------------


@pytest.mark.parametrize("entries", list(MALFORMED.values()), ids=list(MALFORMED))
def test_it_refuses_a_malformed_keyring_without_echoing_key_material(entries):
    with pytest.raises(KeyringError) as excinfo:
        Keyring.parse(entries)

    assert isinstance(excinfo.value, ImproperlyConfigured)
    _assert_no_material(str(excinfo.value), entries)
    _assert_no_material(repr(excinfo.value), entries)
    _assert_no_material(repr(excinfo.value.args), entries)
    assert excinfo.value.__cause__ is None
    if excinfo.value.__context__ is not None:
        _assert_no_material(repr(excinfo.value.__context__), entries)


def test_it_accepts_a_well_formed_keyring_newest_first():
    for entries in ([GOOD_A, GOOD_B], f" {GOOD_A} , {GOOD_B} ", f"{GOOD_A},{GOOD_B}"):
        keyring = Keyring.parse(entries)
        assert keyring.primary_kid == "ka"
        assert keyring.keys == {"ka": KEY_A, "kb": KEY_B}
    assert Keyring.parse([_line("a" * 16, KEY_A), _line("0-_z", KEY_B)]).primary_kid == "a" * 16


def test_it_keeps_keys_out_of_the_keyrings_repr():
    keyring = Keyring.parse([GOOD_A, GOOD_B])
    _assert_no_material(repr(keyring), [GOOD_A, GOOD_B])
    _assert_no_material(str(keyring), [GOOD_A, GOOD_B])
    assert "ka" in repr(keyring) and "kb" in repr(keyring)


# -- the deploy check ------------------------------------------------------------


def _deploy_check_ids() -> list[str]:
    return [message.id for message in checks.run_checks(include_deployment_checks=True)]


@pytest.mark.parametrize(
    "entries",
    [[], [""], ["ka:short"], [GOOD_A, _line("ka", KEY_B)], [GOOD_A, _line("kb", KEY_A)]],
    ids=["missing", "blank", "short-key", "duplicate-kid", "same-key-two-kids"],
)
def test_it_fails_check_deploy_with_clinics_e001(entries):
    with override_settings(FIELD_ENCRYPTION_KEYS=entries):
        assert "clinics.E001" in _deploy_check_ids()
        with pytest.raises(SystemCheckError) as excinfo:
            call_command("check", "--deploy", stdout=StringIO(), stderr=StringIO())

    assert "clinics.E001" in str(excinfo.value)
    _assert_no_material(str(excinfo.value), entries)


def test_it_passes_the_encryption_check_with_a_good_keyring():
    with override_settings(FIELD_ENCRYPTION_KEYS=[GOOD_A, GOOD_B]):
        ids = _deploy_check_ids()
    assert "clinics.E001" not in ids
    assert "clinics.E002" not in ids


def test_it_fails_check_deploy_with_only_the_temporary_development_key():
    with override_settings(FIELD_ENCRYPTION_KEYS=[generate_key_line("dev")]):
        assert "clinics.E002" in _deploy_check_ids()


# -- start-up in-process (AppConfig.ready) -------------------------------------------


@pytest.mark.parametrize("entries", [[], ["ka:short"], [GOOD_A, _line("kb", KEY_A)]])
def test_it_refuses_to_start_without_debug_and_a_good_keyring(entries):
    with (
        override_settings(DEBUG=False, FIELD_ENCRYPTION_KEYS=entries),
        pytest.raises(ImproperlyConfigured) as excinfo,
    ):
        apps.get_app_config("common").ready()
    _assert_no_material(str(excinfo.value), entries)


def test_it_generates_a_temporary_key_with_debug_on_and_no_keys(capsys):
    with override_settings(DEBUG=True, FIELD_ENCRYPTION_KEYS=[]):
        apps.get_app_config("common").ready()
        from django.conf import settings

        [line] = settings.FIELD_ENCRYPTION_KEYS
        assert line.startswith("dev:")
        assert Keyring.parse([line]).primary_kid == "dev"
    warning = capsys.readouterr().err
    assert "WARNING" in warning and "FIELD_ENCRYPTION_KEYS" in warning
    assert line.partition(":")[2] not in warning


# -- start-up in a real process with the production settings ------------------------


def _production_env(keys: str, database: Path) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DJANGO_", "DATABASE_", "FIELD_ENCRYPTION", "PYTEST"))
        and key not in {"SECRET_KEY", "ALLOWED_HOSTS", "DEBUG", "CACHE_URL"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="clinics_project.settings",
        DEBUG="false",
        SECRET_KEY="production-like-secret-key-for-a-start-up-test-0123456789",
        ALLOWED_HOSTS="clinics.example",
        DATABASE_URL=f"sqlite:///{database}",
        FIELD_ENCRYPTION_KEYS=keys,
    )
    return env


STARTUP_COMMANDS = {
    "setup": [sys.executable, "-c", "import django; django.setup()"],
    "check-deploy": [sys.executable, "manage.py", "check", "--deploy"],
    "migrate": [sys.executable, "manage.py", "migrate", "--noinput"],
    # The control: the same environment with good keys does reach the database.
    "connect": [
        sys.executable,
        "-c",
        "import django; django.setup(); from django.db import connection; connection.ensure_connection()",
    ],
}
# One process per failure kind (each takes seconds); the other malformed keyrings
# take the same path and are covered in-process above.
FAILING_STARTS = {
    "missing-migrate": ("migrate", ""),
    "short-key-check-deploy": ("check-deploy", "ka:tooshort"),
    "same-key-setup": ("setup", f"{GOOD_A},{_line('kb', KEY_A)}"),
}
GOOD_START = ("connect", f"{GOOD_A},{GOOD_B}")


@pytest.fixture(scope="module")
def started(tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess[str], Path]]:
    """Every start-up case, run at once in its own directory (a process takes seconds)."""
    running = {}
    for name, (command, keys) in {**FAILING_STARTS, "good": GOOD_START}.items():
        directory = tmp_path_factory.mktemp(name)
        database = directory / "production.sqlite3"
        process = subprocess.Popen(  # noqa: S603  (fixed argv, our own interpreter)
            STARTUP_COMMANDS[command],
            cwd=BASE_DIR,
            env=_production_env(keys, database),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        running[name] = (process, command, database)
    results = {}
    for name, (process, command, database) in running.items():
        stdout, stderr = process.communicate(timeout=90)
        results[name] = (subprocess.CompletedProcess(command, process.returncode, stdout, stderr), database)
    return results


@pytest.mark.parametrize("case", list(FAILING_STARTS))
def test_it_fails_production_start_up_and_writes_nothing(started, case):
    result, database = started[case]
    keys = FAILING_STARTS[case][1]

    assert result.returncode != 0, result.stdout + result.stderr
    assert "ImproperlyConfigured" in result.stderr
    assert "FIELD_ENCRYPTION_KEYS" in result.stderr
    assert not database.exists(), "start-up wrote the database before refusing"
    assert list(database.parent.iterdir()) == []
    _assert_no_material(result.stdout + result.stderr, keys)


def test_it_starts_in_production_with_a_good_keyring(started):
    result, database = started["good"]

    assert result.returncode == 0, result.stderr
    assert database.exists()


# -- generate_encryption_key ------------------------------------------------------


def test_it_prints_a_key_line_that_keyring_parse_accepts():
    lines = []
    for _ in range(2):
        out = StringIO()
        call_command("generate_encryption_key", stdout=out)
        lines.append(out.getvalue().strip())

    for line in lines:
        assert "\n" not in line
        keyring = Keyring.parse(line)
        kid, _, key = line.partition(":")
        assert keyring.primary_kid == kid
        assert len(key) == 43
        assert len(keyring.keys[kid]) == 32
    assert lines[0] != lines[1]
    # Two fresh lines (with distinct kids) make a valid rotation keyring.
    second = lines[1].replace(lines[1].partition(":")[0], "knext", 1)
    assert Keyring.parse([second, lines[0]]).primary_kid == "knext"


def test_it_prints_a_key_line_with_the_kid_asked_for():
    out = StringIO()
    call_command("generate_encryption_key", "--kid", "k2026b", stdout=out)

    assert Keyring.parse(out.getvalue().strip()).primary_kid == "k2026b"


@pytest.mark.parametrize("kid", ["K2026", "k" * 17, "k.1", ""])
def test_it_refuses_to_generate_a_key_line_with_a_bad_kid(kid):
    with pytest.raises(CommandError):
        call_command("generate_encryption_key", "--kid", kid, stdout=StringIO())
