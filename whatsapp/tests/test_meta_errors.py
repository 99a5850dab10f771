"""Every refusal Meta can send reaches the clinic admin as a sentence to act on (meta_errors.py)."""

from __future__ import annotations

import pytest
from django.utils import translation

from whatsapp.meta_errors import META_ERROR_SENTENCES
from whatsapp.tests.helpers import (
    DEREGISTER_URL,
    ERRORS,
    PHONE,
    PNID,
    REGISTER_URL,
    TOKEN,
    VERIFY_URL,
    WABA,
    account_of,
    arrange,
    arrange_active,
    arrange_pending,
    graph_error,
)

pytestmark = pytest.mark.django_db


FORM = {"phone": PHONE, "otpMethod": "sms", "wabaId": WABA}

# Which real call Meta answers with each code, and what the API answers then.
ROUTES = {
    190: "request_code",
    200: "request_code",
    10: "request_code",
    100: "request_code",
    136024: "request_code",
    131031: "request_code",
    133005: "register",
    133006: "register",
    133016: "register",
    136025: "verify_code",
    2: "deregister",
    131000: "deregister",
    133000: "deregister",
}


def sentence(code: int) -> str:
    with translation.override("en"):
        return str(META_ERROR_SENTENCES[code])


def test_every_sentence_is_driven_here():
    assert set(ROUTES) == set(META_ERROR_SENTENCES)


@pytest.mark.parametrize("code", sorted(ROUTES))
def test_it_turns_each_meta_code_into_its_sentence(admin_api, clinic, graph, code):
    http_status, envelope = ERRORS[code]
    route = ROUTES[code]
    if route == "request_code":
        arrange(clinic, status="failed", phone_number_id=PNID, number=PHONE, access_token=TOKEN)
        graph.numbers((PNID, "+503 7765-4321"))
        graph.add("POST", f"{PNID}/request_code", status=http_status, json_body=envelope)
        response = admin_api.post(REGISTER_URL, FORM, format="json")
        expected = (400, {"status": "failed", "detail": sentence(code), "meta_code": code})
    elif route in ("register", "verify_code"):
        arrange_pending(clinic)
        if route == "register":
            graph.verify_code()
        graph.add("POST", f"{PNID}/{route}", status=http_status, json_body=envelope)
        response = admin_api.post(VERIFY_URL, {"code": "123456"}, format="json")
        status = "failed" if route == "register" else "pending_otp"
        expected = (400, {"status": status, "detail": sentence(code), "meta_code": code})
    else:
        arrange_active(clinic)
        graph.add("POST", f"{PNID}/deregister", status=http_status, json_body=envelope)
        response = admin_api.delete(DEREGISTER_URL)
        # Meta's own trouble (5xx): "try again", not "change something".
        expected = (502, {"status": "active", "detail": sentence(code)})

    body = response.json()
    if code == 136025:
        # The wrong-code sentence also says how many tries are left.
        assert body["detail"].startswith(sentence(code))
        body["detail"] = sentence(code)
    assert (response.status_code, body) == expected
    assert account_of(clinic).status == expected[1]["status"]


@pytest.mark.parametrize("http_status", [400, 401, 403])
def test_it_reads_the_code_not_the_http_status(admin_api, clinic, graph, http_status):
    arrange_active(clinic)
    _status, envelope = ERRORS[190]
    graph.add("POST", f"{PNID}/deregister", status=http_status, json_body=envelope)

    body = admin_api.delete(DEREGISTER_URL).json()

    assert (body["meta_code"], body["detail"]) == (190, sentence(190))


def test_it_passes_on_metas_own_words_for_an_unknown_code(admin_api, clinic, graph):
    arrange_active(clinic)
    graph.add(
        "POST",
        f"{PNID}/deregister",
        status=403,
        json_body=graph_error(
            368,
            "(#368) Temporarily blocked for policies violations",
            details="The WhatsApp Business Account is temporarily restricted.",
        ),
    )

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 400
    body = response.json()
    assert (body["status"], body["meta_code"]) == ("active", 368)
    assert "The WhatsApp Business Account is temporarily restricted." in body["detail"]


def test_it_uses_metas_message_when_there_are_no_details(admin_api, clinic, graph):
    arrange(clinic, access_token=TOKEN)
    graph.numbers()
    graph.add("POST", f"{WABA}/phone_numbers", status=400, json_body=ERRORS[200000][1])

    body = admin_api.post(REGISTER_URL, FORM, format="json").json()

    assert body["meta_code"] == 200000
    assert "Cannot add phone number to WhatsApp Business Account" in body["detail"]


@pytest.mark.parametrize(
    ("code", "http_status", "message", "details"),
    [
        (4, 400, "(#4) Application request limit reached", "Application request limit reached"),
        (
            133015,
            400,
            "(#133015) Please wait a few minutes before attempting to register this phone number",
            "The phone number you are attempting to register was recently deleted, and deletion has not yet completed.",
        ),
        (133004, 503, "(#133004) Server temporarily unavailable", "Server temporarily unavailable"),
    ],
)
def test_it_explains_metas_temporary_trouble(admin_api, clinic, graph, code, http_status, message, details):
    arrange_active(clinic)
    graph.add(
        "POST",
        f"{PNID}/deregister",
        status=http_status,
        json_body=graph_error(code, message, details=details),
    )

    response = admin_api.delete(DEREGISTER_URL)

    assert response.status_code == 502
    detail = response.json()["detail"]
    assert details in detail or message in detail
    assert not detail.rstrip().endswith(":")
