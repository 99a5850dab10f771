"""The README's curl block, taken from README.md itself, runs as written against a live server and
the simulated Meta, set up the way scripts/run sets them up (demo clinic, demo WABA and token)."""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess

import pytest

from .conftest import (
    PRODUCT_VARIABLES,
    PYTHON,
    ROOT,
    create_throwaway_database,
    free_port,
    product_env,
    run_manage,
)

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
DEMO_WABA = "102290129340398"
DEMO_TOKEN = "EAADEMOsimulatedACCESStokenFORtheDEMOclinic0001"


def readme_api_block() -> str:
    """The first bash block under "## The API"."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## The API\n", 1)[1]
    match = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert match, "README.md has no bash block under '## The API'"
    return match.group(1)


def test_the_scripts_run_constants_match_the_readme():
    # The block relies on the demo WABA and token scripts/run gives the demo clinic.
    run = (ROOT / "scripts" / "run").read_text(encoding="utf-8")
    block = readme_api_block()
    assert f"DEMO_WABA_ID={DEMO_WABA}" in run and DEMO_WABA in block
    assert f"DEMO_ACCESS_TOKEN={DEMO_TOKEN}" in run and DEMO_TOKEN[:8] + "...****" in block


def test_the_readme_curl_block_runs_as_written(processes, tmp_path):
    db = create_throwaway_database("clinics_readme", tmp_path)
    password = secrets.token_urlsafe(12)
    try:
        meta_port = free_port()
        base = product_env(DATABASE_URL=db.url, WHATSAPP_STATUS_REFRESH_SECONDS="1")
        fake = processes.start(
            "simulated-meta",
            [PYTHON, "-m", "devtools.fake_graph", "--port", str(meta_port), "--demo-waba", DEMO_WABA],
            base,
        )
        meta = f"http://127.0.0.1:{meta_port}"
        fake.wait_ready(f"{meta}/_fake/settings")
        env = {
            **base,
            # What scripts/run gives the development server.
            "DEBUG": "true",
            "META_SIMULATED": "true",
            "META_GRAPH_URL": f"{meta}/v26.0",
            "DEMO_PASSWORD": password,
            "DEMO_SUPERUSER_PASSWORD": secrets.token_urlsafe(12),
            "DEMO_WABA_ID": DEMO_WABA,
            "DEMO_ACCESS_TOKEN": DEMO_TOKEN,
        }
        run_manage(env, "migrate", "--no-input")
        printed = run_manage(env, "ensure_demo_clinic", "--base-url", "http://127.0.0.1:1").stdout
        assert password in printed and "SIMULATED" in printed
        _server, origin = processes.gunicorn(env)
        (tmp_path / ".env").write_text(f"DEMO_PASSWORD={password}\n", encoding="utf-8")
        script = tmp_path / "readme.sh"
        script.write_text(readme_api_block(), encoding="utf-8")

        # A newcomer runs the block again on the same database and the same simulated Meta: it passes again.
        for run in ("first", "second"):
            result = subprocess.run(  # noqa: S603 - bash running the README's own block
                ["/bin/bash", "-euo", "pipefail", str(script)],
                cwd=tmp_path,
                env={**base, "BASE": origin, "META": meta},
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            assert result.returncode == 0, run + "\n" + result.stdout + result.stderr
            check_answers(result.stdout, run)
    finally:
        processes.stop_all()
        db.drop()


def check_answers(stdout: str, run: str) -> None:
    """What each step of the block answered, as the README's comments say."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    answers = [json.loads(line) for line in lines if line.startswith("{")]
    settings_read, settings_write, profile, profile_write = answers[:4]
    assert settings_read["whatsapp_access_token"] == DEMO_TOKEN[:8] + "...****", run
    assert settings_write["city"] == "Santa Ana" and settings_write["phone"] == "+50399999999", run
    assert "whatsapp_access_token" not in profile, run
    assert profile_write["currency"] == "USD", run
    configure, deregister, register, verify, poll, deregister_again, last_check, check_now, health = answers[
        4:
    ]
    assert set(last_check) >= {"verdict", "checks"}, run
    if run == "first":
        assert set(check_now) >= {"verdict", "checks"}, run
    else:
        # Within a minute of the first run's check: the documented once-a-minute answer, in Spanish.
        assert set(check_now) == {"status", "detail"}, check_now
        assert "menos de un minuto" in check_now["detail"], check_now
    assert configure["status"] == "active", (run, configure)
    # curl sends no Accept-Language: the answer is in the site's language, Spanish.
    assert (
        configure["message"] == "Configuración de WhatsApp guardada: Meta confirma que el número está activo."
    ), run
    assert deregister == {"status": "disconnected"}, run
    assert register == {"status": "pending_otp"}, (run, register)
    assert verify["status"] in ("active", "verifying"), (run, verify)
    assert poll["status"] in ("active", "verifying") and poll["number"] == "+50377654321", (run, poll)
    assert deregister_again == {"status": "disconnected"}, run
    assert health == {"status": "ok"}, run
    assert "204" in lines, run  # signed out


def test_a_busy_port_stops_scripts_run_in_one_sentence(tmp_path):
    """`PORT=<busy> scripts/run`: one sentence, exit 1, and nothing started (no simulated Meta, no .env)."""
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCT_VARIABLES}
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        meta_port = free_port()
        env_before = (ROOT / ".env").read_bytes() if (ROOT / ".env").exists() else None

        result = subprocess.run(  # noqa: S603
            [str(ROOT / "scripts" / "run")],
            cwd=ROOT,
            env={**clean, "PORT": str(busy), "META_PORT": str(meta_port)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Port {busy} on 127.0.0.1 is already in use (another server is running there?): "
        f"stop it, or choose another port, e.g. PORT={busy + 1} scripts/run."
    )
    assert "Meta" not in result.stdout and "password" not in result.stdout
    with socket.socket() as probe:  # the simulated Meta never started
        assert probe.connect_ex(("127.0.0.1", meta_port)) != 0
    assert ((ROOT / ".env").read_bytes() if (ROOT / ".env").exists() else None) == env_before


def test_a_partial_env_is_completed_not_replaced(tmp_path):
    env_file = tmp_path / ".env"
    env_file.write_text("META_GRAPH_URL=http://127.0.0.1:9/v26.0", encoding="utf-8")  # no final newline
    clean = {k: v for k, v in os.environ.items() if k not in PRODUCT_VARIABLES}

    def complete() -> None:
        subprocess.run(  # noqa: S603
            [PYTHON, "-m", "devtools.dev_env", "complete", str(env_file)],
            cwd=ROOT,
            env=clean,
            check=True,
            timeout=60,
        )

    complete()
    first = env_file.read_text(encoding="utf-8")
    complete()

    assert first.startswith("META_GRAPH_URL=http://127.0.0.1:9/v26.0\n")
    for name in ("DEBUG", "SECRET_KEY", "FIELD_ENCRYPTION_KEYS", "DEMO_PASSWORD", "DEMO_SUPERUSER_PASSWORD"):
        assert re.search(rf"^{name}=.+$", first, re.MULTILINE), name
    assert env_file.read_text(encoding="utf-8") == first  # the passwords stay the same
