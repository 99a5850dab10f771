"""The bot endpoint: saving its URL, rotating its secret, and the signed ping that makes it live."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import override

from common.tests.test_encryption import raw_value
from messaging.bot_endpoint import bot_endpoint_ping, bot_endpoint_rotate_secret, bot_endpoint_save_url
from messaging.models import BotEndpoint
from messaging.tests.test_signing import spec_verify

pytestmark = pytest.mark.django_db

PUBLIC_URL = "https://bot.clinic.example/whatsapp"


@pytest.fixture(autouse=True)
def _english():
    # The messages are asserted in English; one test switches to Spanish.
    with override("en"):
        yield


def url_errors(clinic, url) -> list[str]:
    with pytest.raises(ValidationError) as excinfo:
        bot_endpoint_save_url(clinic_id=clinic.pk, url=url)
    return excinfo.value.message_dict["url"]


def test_saving_a_public_https_url_makes_it_unverified_with_a_secret_shown_once(clinic, resolves_to):
    resolves_to("93.184.215.14")

    saved = bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL)

    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert (endpoint.url, endpoint.status) == (PUBLIC_URL, "unverified")
    assert saved.new_secret is not None and saved.new_secret == endpoint.secret
    assert saved.new_secret.startswith("whsec_")
    stored = raw_value(BotEndpoint, endpoint.pk, "secret")
    assert stored is not None and stored.startswith("enc:v1:") and saved.new_secret not in stored
    assert endpoint.masked_secret == saved.new_secret[:8] + "...****"
    assert saved.new_secret not in repr(endpoint) and saved.new_secret not in str(endpoint)

    again = bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL)
    assert again.new_secret is None  # shown once
    assert BotEndpoint.objects.get(clinic=clinic).secret == saved.new_secret


def test_a_changed_url_is_unverified_again_and_an_empty_one_removes_the_bot(clinic, resolves_to):
    resolves_to("93.184.215.14")
    bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL)
    BotEndpoint.objects.filter(clinic=clinic).update(status="live")

    bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL)
    assert BotEndpoint.objects.get(clinic=clinic).status == "live"  # the same URL changes nothing

    bot_endpoint_save_url(clinic_id=clinic.pk, url="https://bot2.clinic.example/hook")
    assert BotEndpoint.objects.get(clinic=clinic).status == "unverified"

    bot_endpoint_save_url(clinic_id=clinic.pk, url="")
    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert (endpoint.url, endpoint.status) == ("", "none")


@pytest.mark.parametrize(
    ("url", "answers", "message"),
    [
        ("http://bot.clinic.example/hook", ["93.184.215.14"], "Use an https:// URL."),
        ("https://user:secret@bot.clinic.example/", ["93.184.215.14"], "Leave user names and passwords"),
        ("not a url", ["93.184.215.14"], "Enter a valid URL."),
        ("https://bot.clinic.example/hook", ["127.0.0.1"], "public internet"),
        ("https://bot.clinic.example/hook", ["169.254.169.254"], "public internet"),
        ("https://bot.clinic.example/hook", ["fd00::1"], "public internet"),
        ("https://bot.clinic.example/hook", ["::ffff:10.0.0.1"], "public internet"),
        ("https://[::1]/hook", ["::1"], "public internet"),
    ],
)
def test_a_refused_url_is_a_400_on_url_and_changes_nothing(clinic, resolves_to, url, answers, message):
    resolves_to("93.184.215.14")
    bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL)
    resolves_to(*answers)

    [error] = url_errors(clinic, url)

    assert message in error
    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert (endpoint.url, endpoint.status) == (PUBLIC_URL, "unverified")


def test_a_host_that_does_not_resolve_is_refused(clinic, monkeypatch):
    import socket

    def fail(*_a, **_k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", fail)
    assert url_errors(clinic, "https://nowhere.clinic.example/") == ["This host name does not resolve."]
    assert not BotEndpoint.objects.filter(clinic=clinic).exists()


def test_the_refusal_reads_in_spanish(clinic, resolves_to):
    resolves_to("10.0.0.1")
    with override("es"):
        [error] = url_errors(clinic, PUBLIC_URL)
    assert "internet pública" in error


def test_rotation_returns_the_new_secret_once_and_signs_with_both_for_24_hours(clinic, resolves_to):
    resolves_to("93.184.215.14")
    first = bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL).new_secret

    second = bot_endpoint_rotate_secret(clinic_id=clinic.pk)

    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert second.startswith("whsec_") and second != first
    assert (endpoint.secret, endpoint.previous_secret) == (second, first)
    now = timezone.now()
    assert endpoint.signing_secrets(now) == [second, first]
    assert endpoint.signing_secrets(now + timedelta(hours=24, seconds=1)) == [second]
    stored = raw_value(BotEndpoint, endpoint.pk, "previous_secret")
    assert stored is not None and stored.startswith("enc:v1:")


def test_the_ping_is_signed_and_a_2xx_makes_the_endpoint_live(clinic, bot_server):
    saved = bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url)
    bot_server.answer = lambda _r: (204, {}, b"")

    result = bot_endpoint_ping(clinic_id=clinic.pk)

    assert (result.live, result.status_code, result.error) == (True, 204, "")
    endpoint = BotEndpoint.objects.get(clinic=clinic)
    assert endpoint.status == "live" and endpoint.last_success_at is not None
    [request] = bot_server.received
    assert json.loads(request.body) == {
        "type": "ping",
        "clinic_id": str(clinic.pk),
        "conversation": None,
        "message": None,
    }
    assert request.headers["webhook-id"].startswith("evt_ping_")
    assert spec_verify(saved.new_secret, request.headers, request.body)


def test_a_ping_during_a_rotation_carries_both_signatures(clinic, bot_server):
    first = bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url).new_secret
    second = bot_endpoint_rotate_secret(clinic_id=clinic.pk)

    assert bot_endpoint_ping(clinic_id=clinic.pk).live

    [request] = bot_server.received
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    assert spec_verify(first, request.headers, request.body)
    assert spec_verify(second, request.headers, request.body)


def test_a_failed_ping_says_what_the_bot_answered_and_leaves_it_unverified(clinic, bot_server):
    bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url)
    bot_server.answer = lambda _r: (401, {}, b"bad signature")

    result = bot_endpoint_ping(clinic_id=clinic.pk)

    assert (result.live, result.status_code, result.error) == (False, 401, "http_status")
    assert BotEndpoint.objects.get(clinic=clinic).status == "unverified"


def test_a_ping_that_cannot_connect_says_why(clinic, bot_server, settings):
    bot_endpoint_save_url(clinic_id=clinic.pk, url=bot_server.url)
    settings.BOT_URL_ALLOW_PRIVATE = False  # a production server never connects to 127.0.0.1

    result = bot_endpoint_ping(clinic_id=clinic.pk)

    assert (result.live, result.status_code, result.error) == (False, None, "refused_address")
    assert bot_server.received == []
    assert BotEndpoint.objects.get(clinic=clinic).status == "unverified"


def test_a_ping_without_a_url_is_refused(clinic):
    with pytest.raises(ValidationError) as excinfo:
        bot_endpoint_ping(clinic_id=clinic.pk)
    assert excinfo.value.message_dict == {"url": ["Save the bot's URL first."]}


def test_check_deploy_warns_when_private_bot_urls_are_allowed(settings):
    from django.core.checks import run_checks

    settings.BOT_URL_ALLOW_PRIVATE = True
    assert "messaging.W001" in [m.id for m in run_checks(include_deployment_checks=True)]
    settings.BOT_URL_ALLOW_PRIVATE = False
    assert "messaging.W001" not in [m.id for m in run_checks(include_deployment_checks=True)]


def test_saving_and_rotating_leave_audit_rows_with_fingerprints_only(clinic, resolves_to):
    from common.audit import fingerprint
    from common.models import AuditEvent

    resolves_to("93.184.215.14")
    first = bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL).new_secret
    bot_endpoint_save_url(clinic_id=clinic.pk, url=PUBLIC_URL)  # unchanged: no row
    second = bot_endpoint_rotate_secret(clinic_id=clinic.pk)

    saved, rotated = AuditEvent.objects.filter(
        clinic_id=clinic.pk, action__startswith="bot_endpoint."
    ).order_by("id")
    assert saved.action == "bot_endpoint.updated"
    assert saved.changes == {
        "url": ["", PUBLIC_URL],
        "status": ["none", "unverified"],
        "secret": [None, fingerprint(first)],
    }
    assert rotated.action == "bot_endpoint.secret_rotated"
    assert rotated.changes == {"secret": [fingerprint(first), fingerprint(second)]}
    text = json.dumps([saved.changes, rotated.changes])
    assert first not in text and second not in text
