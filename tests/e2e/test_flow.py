"""The whole WhatsApp onboarding flow over real HTTP: gunicorn + the fake Graph server process."""

from __future__ import annotations

import secrets
import time

import pytest
import requests

from .conftest import create_throwaway_database, product_env, run_manage

pytestmark = pytest.mark.e2e

PASSWORD = "e2e-" + secrets.token_urlsafe(16)
ADMIN = "admin@e2e.example"
WABA = "102290129340398"
# An access token that looks like Meta's and is unique to this run: we grep for it everywhere.
ACCESS_TOKEN = "EAAE2E" + secrets.token_hex(40)


@pytest.fixture
def stack(processes, tmp_path):
    db = create_throwaway_database("clinics_e2e", tmp_path)
    try:
        base = product_env(DATABASE_URL=db.url, WHATSAPP_STATUS_REFRESH_SECONDS="1", LOG_LEVEL="DEBUG")
        fake, fake_origin = processes.fake_graph(base)
        env = {**base, "META_GRAPH_URL": f"{fake_origin}/v26.0"}
        run_manage(env, "migrate", "--no-input")
        created = run_manage(
            {**env, "CLINIC_USER_PASSWORD": PASSWORD},
            "create_clinic",
            "Clínica E2E",
            "--admin-email",
            ADMIN,
        )
        assert "id:" in created.stdout
        server, origin = processes.gunicorn(env)
        yield {"origin": origin, "fake": fake_origin, "server": server, "fake_process": fake}
    finally:
        processes.stop_all()
        db.drop()


def _json(response: requests.Response, status: int) -> dict:
    assert response.status_code == status, (response.status_code, response.text)
    assert ACCESS_TOKEN not in response.text
    return response.json()


def test_connect_verify_poll_deregister(stack):
    origin, fake = stack["origin"], stack["fake"]
    bodies: list[str] = []
    session = requests.Session()

    def call(method: str, path: str, status: int = 200, **kwargs) -> dict:
        response = session.request(method, origin + path, timeout=30, **kwargs)
        bodies.append(response.text)
        return _json(response, status)

    # Token login
    token = call("POST", "/api/auth/token/", json={"email": ADMIN, "password": PASSWORD})["token"]
    session.headers["Authorization"] = f"Token {token}"
    settings = call("GET", "/api/clinics/settings/")
    assert settings["whatsapp_status"] == "disconnected"
    assert settings["whatsapp_access_token"] is None

    # The number exists on the WABA at "Meta" (as after a dashboard onboarding), still PENDING.
    number = requests.post(
        f"{fake}/_fake/numbers",
        json={"waba_id": WABA, "cc": "503", "phone_number": "77654321", "verified_name": "Clinica E2E"},
        timeout=5,
    ).json()
    pnid = number["id"]

    # 5. configure: stored, then Meta says PENDING -> verifying
    body = call(
        "PUT",
        "/api/clinics/whatsapp/",
        json={
            "phoneNumberId": pnid,
            "businessAccountId": WABA,
            "accessToken": ACCESS_TOKEN,
            "verifyToken": "e2e-verify-token",
        },
    )
    # No Accept-Language: the site's language, Spanish.
    assert body["message"] == "Configuración de WhatsApp guardada: Meta aún está preparando el número."
    assert body["status"] == "verifying", body
    settings = call("GET", "/api/clinics/settings/")
    assert settings["whatsapp_access_token"] == ACCESS_TOKEN[:8] + "...****"
    assert settings["whatsapp_phone_number_id"] == pnid

    # 2 GETs after register still say PENDING, so `verifying` is exercised after verify.
    assert requests.post(f"{fake}/_fake/settings", json={"pending_reads_after_register": 2}, timeout=5).ok

    # 6. register (masked token = the stored one)
    body = call(
        "POST",
        "/api/clinics/whatsapp/register/",
        json={
            "phone": "+503 7765-4321",
            "otpMethod": "sms",
            "wabaId": WABA,
            "accessToken": settings["whatsapp_access_token"],
        },
    )
    assert body == {"status": "pending_otp"}

    # Read the code "sent by SMS"
    code = requests.get(f"{fake}/_fake/numbers/{pnid}/code", timeout=5).json()
    assert code["method"] == "SMS"
    assert len(code["code"]) == 6

    # 7. verify with a wrong code first (stays pending_otp), then the right one
    wrong = "000000" if code["code"] != "000000" else "111111"
    body = call("POST", "/api/clinics/whatsapp/verify/", 400, json={"code": wrong})
    assert body["status"] == "pending_otp" and body["detail"] and body["meta_code"] == 136025
    body = call(
        "POST", "/api/clinics/whatsapp/verify/", json={"code": f"{code['code'][:3]}-{code['code'][3:]}"}
    )
    assert body == {"status": "verifying"}

    # 8. poll until active (bounded: 20 polls, ~1.1 s apart: the refresh window is 1 s)
    seen = []
    for _ in range(20):
        body = call("GET", "/api/clinics/whatsapp/status/")
        seen.append(body["status"])
        assert set(body) == {"status", "number", "detail"}
        if body["status"] == "active":
            break
        assert body["status"] == "verifying"
        time.sleep(1.1)
    assert seen[-1] == "active", seen
    assert "verifying" in seen
    assert body["number"] == "+50377654321"
    graph_number = requests.get(f"{fake}/_fake/state", timeout=5).json()
    assert ACCESS_TOKEN not in str(graph_number)  # the fake keeps only token fingerprints
    subscribed = requests.get(f"{fake}/_fake/requests", params={"path": "subscribed_apps"}, timeout=5).json()
    assert any(entry["method"] == "POST" for entry in subscribed), subscribed
    assert call("GET", "/api/clinics/settings/")["whatsapp_status"] == "active"

    # 6 while active -> 409
    body = call(
        "POST",
        "/api/clinics/whatsapp/register/",
        409,
        json={"phone": "+503 7765-4321", "otpMethod": "sms", "wabaId": WABA},
    )
    assert body["status"] == "active" and body["detail"]

    # 9. deregister -> disconnected, bot off, credentials kept
    assert call("DELETE", "/api/clinics/whatsapp/") == {"status": "disconnected"}
    settings = call("GET", "/api/clinics/settings/")
    assert settings["whatsapp_status"] == "disconnected"
    assert settings["bot_enabled"] is False
    assert settings["whatsapp_access_token"] == ACCESS_TOKEN[:8] + "...****"
    status = call("GET", "/api/clinics/whatsapp/status/")
    assert status["status"] == "disconnected"
    deregisters = requests.get(f"{fake}/_fake/requests", params={"path": "deregister"}, timeout=5).json()
    assert len(deregisters) == 1

    # Sign out
    response = session.post(origin + "/api/auth/logout/", timeout=10)
    assert response.status_code == 204
    assert session.get(origin + "/api/clinics/settings/", timeout=10).status_code == 401

    # The token never appeared in any response or in either process's output.
    assert not any(ACCESS_TOKEN in text for text in bodies)
    stack["server"].stop()
    stack["fake_process"].stop()
    server_log = stack["server"].log()
    assert "GET /api/clinics/whatsapp/status/" in server_log  # the access log was captured
    assert ACCESS_TOKEN not in server_log
    assert ACCESS_TOKEN not in stack["fake_process"].log()
