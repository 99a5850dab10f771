from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import requests
import responses
from responses import matchers

from whatsapp import meta
from whatsapp.meta import (
    MetaClient,
    MetaError,
    MetaRefusedError,
    MetaTimeoutError,
    MetaUnavailableError,
    PhoneNumberInfo,
)

DATA = Path(__file__).parent / "data"
BASE = "https://graph.test/v26.0"
TOKEN = "EAAGsecretTOKENvalue0123456789"
PNID = "106540352242922"
WABA = "102290129340398"
FIELDS = "id,display_phone_number,verified_name,status,code_verification_status,name_status,quality_rating,platform_type"


def load(name: str) -> dict:
    return json.loads((DATA / name).read_text())


@pytest.fixture
def client() -> MetaClient:
    return MetaClient(TOKEN, base_url=BASE, connect_timeout=1.5, read_timeout=2.5)


@pytest.fixture
def mocked():
    with responses.RequestsMock() as mock:
        yield mock


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    pauses: list[float] = []
    monkeypatch.setattr(meta, "_sleep", pauses.append)
    return pauses


def assert_sent(call, method: str, url_path: str) -> None:
    assert call.request.method == method
    assert call.request.url.split("?")[0] == f"{BASE}/{url_path}"
    assert call.request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert call.request.req_kwargs["timeout"] == (1.5, 2.5)
    assert call.request.req_kwargs["stream"] is True


# --- happy paths ---------------------------------------------------------------------------------


def test_it_gets_a_phone_number(client, mocked):
    mocked.get(
        f"{BASE}/{PNID}",
        json=load("phone_number_connected.json"),
        match=[matchers.query_param_matcher({"fields": FIELDS})],
    )

    info = client.get_phone_number(PNID)

    assert_sent(mocked.calls[0], "GET", PNID)
    assert "access_token" not in mocked.calls[0].request.url
    assert info == PhoneNumberInfo(
        id="1190244884170604",
        display_phone_number="+55 21 3731-5313",
        verified_name="Secretaria de Saude de Marica",
        status="CONNECTED",
        code_verification_status="EXPIRED",
        name_status="APPROVED",
        quality_rating="GREEN",
        platform_type="CLOUD_API",
    )
    assert info.display_digits == "552137315313"


def test_it_leaves_fields_meta_omits_as_none(client, mocked):
    mocked.get(f"{BASE}/{PNID}", json=load("phone_number_status_only.json"))

    info = client.get_phone_number(PNID)

    assert info.id == PNID
    assert info.status == "CONNECTED"
    assert info.display_phone_number is None
    assert info.display_digits == ""
    assert info.quality_rating is None


def test_it_lists_phone_numbers(client, mocked):
    mocked.get(
        f"{BASE}/{WABA}/phone_numbers",
        json=load("phone_numbers_list_minimal.json"),
        match=[matchers.query_param_matcher({"fields": FIELDS})],
    )

    numbers = client.list_phone_numbers(WABA)

    assert_sent(mocked.calls[0], "GET", f"{WABA}/phone_numbers")
    assert [n.id for n in numbers] == ["1906385232743451", "1913623884432103"]
    assert [n.display_digits for n in numbers] == ["16315555555", "16315555556"]
    assert numbers[1].quality_rating == "NA"
    assert numbers[0].status is None


def test_it_reads_a_real_list_with_cursors_but_no_next(client, mocked):
    mocked.get(f"{BASE}/{WABA}/phone_numbers", json=load("phone_numbers_list.json"))

    numbers = client.list_phone_numbers(WABA)

    assert len(mocked.calls) == 1
    assert numbers[0].display_digits == "26777084294"
    assert numbers[0].code_verification_status == "EXPIRED"


def test_it_follows_paging_with_the_cursor_not_the_next_url(client, mocked):
    first = load("phone_numbers_list_minimal.json")
    # Graph's next links often carry access_token; the client must not reuse them.
    first["paging"] = {
        "cursors": {"before": "B1", "after": "CURSOR1"},
        "next": f"https://evil.test/v26.0/{WABA}/phone_numbers?access_token=LEAKED&limit=2&after=CURSOR1",
    }
    mocked.get(
        f"{BASE}/{WABA}/phone_numbers",
        json=first,
        match=[matchers.query_param_matcher({"fields": FIELDS})],
    )
    mocked.get(
        f"{BASE}/{WABA}/phone_numbers",
        json={"data": [{"id": "3", "status": "PENDING"}], "paging": {"cursors": {"after": "C2"}}},
        match=[matchers.query_param_matcher({"fields": FIELDS, "after": "CURSOR1"})],
    )

    numbers = client.list_phone_numbers(WABA)

    assert [n.id for n in numbers] == ["1906385232743451", "1913623884432103", "3"]
    assert len(mocked.calls) == 2
    second = mocked.calls[1].request
    assert second.url.startswith(f"{BASE}/{WABA}/phone_numbers?")
    assert "LEAKED" not in second.url
    assert second.headers["Authorization"] == f"Bearer {TOKEN}"


def test_it_stops_after_ten_pages(client, mocked):
    page = {"data": [{"id": "1"}], "paging": {"next": f"{BASE}/{WABA}/phone_numbers?after=X"}}
    mocked.get(f"{BASE}/{WABA}/phone_numbers", json=page)

    numbers = client.list_phone_numbers(WABA)

    assert len(mocked.calls) == 10
    assert len(numbers) == 10


def test_it_adds_a_phone_number(client, mocked):
    mocked.post(
        f"{BASE}/{WABA}/phone_numbers",
        json=load("phone_number_created.json"),
        match=[
            matchers.json_params_matcher(
                {"cc": "503", "phone_number": "77654321", "verified_name": "Clínica"}
            )
        ],
    )

    new_id = client.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name="Clínica")

    assert new_id == "110200345501442"
    assert_sent(mocked.calls[0], "POST", f"{WABA}/phone_numbers")
    assert mocked.calls[0].request.headers["Content-Type"] == "application/json"


def test_it_requests_a_code(client, mocked):
    mocked.post(f"{BASE}/{PNID}/request_code", json=load("success.json"))

    assert client.request_code(PNID, method="sms", language="es") is None

    call = mocked.calls[0]
    assert_sent(call, "POST", f"{PNID}/request_code")
    assert parse_qs(call.request.body) == {"code_method": ["SMS"], "language": ["es"]}
    assert call.request.headers["Content-Type"] == "application/x-www-form-urlencoded"


def test_it_verifies_a_code_without_separators(client, mocked):
    mocked.post(f"{BASE}/{PNID}/verify_code", json=load("success.json"))

    client.verify_code(PNID, "123-830")

    call = mocked.calls[0]
    assert_sent(call, "POST", f"{PNID}/verify_code")
    assert parse_qs(call.request.body) == {"code": ["123830"]}
    assert "123830" not in call.request.url


def test_it_registers(client, mocked):
    mocked.post(
        f"{BASE}/{PNID}/register",
        json=load("success.json"),
        match=[matchers.json_params_matcher({"messaging_product": "whatsapp", "pin": "212834"})],
    )

    client.register(PNID, "212834")

    assert_sent(mocked.calls[0], "POST", f"{PNID}/register")


def test_it_deregisters(client, mocked):
    mocked.post(f"{BASE}/{PNID}/deregister", json=load("success.json"))

    client.deregister(PNID)

    assert_sent(mocked.calls[0], "POST", f"{PNID}/deregister")
    assert not mocked.calls[0].request.body


def test_it_subscribes_the_app(client, mocked):
    mocked.post(f"{BASE}/{WABA}/subscribed_apps", json=load("success.json"))

    client.subscribe_app(WABA)

    assert_sent(mocked.calls[0], "POST", f"{WABA}/subscribed_apps")


def test_it_takes_base_url_and_timeouts_from_settings(mocked, settings):
    settings.META_GRAPH_URL = "https://graph.example/v25.0/"
    settings.META_CONNECT_TIMEOUT = 3.0
    settings.META_READ_TIMEOUT = 7.0
    mocked.post("https://graph.example/v25.0/1/deregister", json={"success": True})

    MetaClient(TOKEN).deregister("1")

    assert mocked.calls[0].request.req_kwargs["timeout"] == (3.0, 7.0)


def test_it_sends_the_token_per_request_not_on_a_shared_session(mocked):
    session = requests.Session()
    mocked.post(f"{BASE}/1/deregister", json={"success": True})
    mocked.post(f"{BASE}/2/deregister", json={"success": True})

    MetaClient("TOKEN-A", base_url=BASE, session=session).deregister("1")
    MetaClient("TOKEN-B", base_url=BASE, session=session).deregister("2")

    assert mocked.calls[0].request.headers["Authorization"] == "Bearer TOKEN-A"
    assert mocked.calls[1].request.headers["Authorization"] == "Bearer TOKEN-B"
    assert "Authorization" not in session.headers


# --- Graph errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "status", "code", "subcode", "details", "fbtrace_id"),
    [
        ("error_190_expired.json", 401, 190, 463, None, "AWpk5h2ceG6"),
        ("error_190_invalid_token.json", 400, 190, None, None, "A1b2C3d4E5f6"),
        ("error_100_33_unknown_object.json", 400, 100, 33, None, "fbtrace_id"),
        ("error_100_nonexisting_field.json", 400, 100, None, None, None),
        (
            "error_133005_pin_mismatch.json",
            400,
            133005,
            None,
            "Two-step verification PIN incorrect.",
            "A",
        ),
        (
            "error_133016_register_rate_limit.json",
            400,
            133016,
            None,
            "Registration or Deregistration failed because there were too many attempts for this phone "
            "number in a short period of time",
            "A1b2C3d4E5f6G7h8",
        ),
        (
            "error_136025_verify_code.json",
            400,
            136025,
            None,
            "Code couldn't be verified: the code is wrong or has expired.",
            "AQx7bq1VnM2kPzL0oJtY3sE",
        ),
        ("error_200_permission.json", 403, 200, None, None, "AbCdEfGhIjKlMnOpQrStUvW"),
        (
            "error_131031_account_locked.json",
            403,
            131031,
            None,
            "Business account has been locked.",
            "A7tQ2mX9rB1kZ5vN8cL3pHs",
        ),
        ("error_133006_not_verified.json", 400, 133006, None, None, "AhB4cD5eF6gH7iJ8kL9mN0o"),
    ],
)
def test_it_raises_refused_with_the_graph_envelope(
    client, mocked, name, status, code, subcode, details, fbtrace_id
):
    body = load(name)
    mocked.post(f"{BASE}/{PNID}/register", json=body, status=status)

    with pytest.raises(MetaRefusedError) as caught:
        client.register(PNID, "123456")

    error = caught.value
    assert error.code == code
    assert error.subcode == subcode
    assert error.message == body["error"]["message"]
    if details is not None:
        assert error.details == details
    assert error.fbtrace_id == fbtrace_id
    assert error.http_status == status
    assert f"code {code}" in str(error)
    assert len(mocked.calls) == 1


def test_it_reads_error_data_given_as_a_string(client, mocked):
    mocked.post(f"{BASE}/{PNID}/register", json=load("error_details_string.json"), status=400)

    with pytest.raises(MetaRefusedError) as caught:
        client.register(PNID, "123456")

    assert caught.value.details == "Invalid parameter value for pin"


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [("error_2_service_unavailable.json", 503, 2), ("error_131000_something_went_wrong.json", 500, 131000)],
)
def test_it_raises_unavailable_for_5xx_and_keeps_the_code(client, mocked, name, status, code):
    mocked.post(f"{BASE}/{PNID}/register", json=load(name), status=status)

    with pytest.raises(MetaUnavailableError) as caught:
        client.register(PNID, "123456")

    assert caught.value.code == code
    assert caught.value.http_status == status
    assert caught.value.fbtrace_id == load(name)["error"]["fbtrace_id"]


def test_it_raises_refused_with_code_0_for_4xx_without_envelope(client, mocked):
    mocked.post(f"{BASE}/{PNID}/deregister", body="Bad Request", status=400, content_type="text/plain")

    with pytest.raises(MetaRefusedError) as caught:
        client.deregister(PNID)

    assert caught.value.code == 0
    assert caught.value.http_status == 400


def test_it_raises_unavailable_for_an_html_error_page(client, mocked):
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    mocked.post(f"{BASE}/{PNID}/deregister", body=page, status=502, content_type="text/html")

    with pytest.raises(MetaUnavailableError) as caught:
        client.deregister(PNID)

    assert caught.value.http_status == 502
    assert caught.value.code is None


@pytest.mark.parametrize("body", ['{"success": tru', "[1, 2]", "", "\xff\xfe"])
def test_it_raises_unavailable_for_a_2xx_that_is_not_a_json_object(client, mocked, body):
    mocked.post(f"{BASE}/{PNID}/deregister", body=body, status=200)

    with pytest.raises(MetaUnavailableError):
        client.deregister(PNID)


def test_it_raises_unavailable_for_success_false(client, mocked):
    mocked.post(f"{BASE}/{PNID}/deregister", json={"success": False})

    with pytest.raises(MetaUnavailableError, match="success: false"):
        client.deregister(PNID)


def test_it_raises_unavailable_for_a_phone_number_without_id(client, mocked):
    mocked.get(f"{BASE}/{PNID}", json={"status": "CONNECTED"})

    with pytest.raises(MetaUnavailableError):
        client.get_phone_number(PNID)


def test_it_does_not_follow_redirects(client, mocked):
    mocked.post(f"{BASE}/{PNID}/deregister", status=302, headers={"Location": "https://elsewhere.test/"})

    with pytest.raises(MetaUnavailableError):
        client.deregister(PNID)

    assert len(mocked.calls) == 1


# --- transport failures -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "exc", [requests.exceptions.ConnectTimeout("connect"), requests.exceptions.ReadTimeout("read")]
)
def test_it_raises_timeout(client, mocked, exc):
    mocked.post(f"{BASE}/{PNID}/register", body=exc)

    with pytest.raises(MetaTimeoutError) as caught:
        client.register(PNID, "123456")

    assert caught.value.__cause__ is exc


def test_it_raises_unavailable_when_the_connection_fails(client, mocked):
    mocked.post(f"{BASE}/{PNID}/register", body=requests.exceptions.ConnectionError("refused"))

    with pytest.raises(MetaUnavailableError) as caught:
        client.register(PNID, "123456")

    assert isinstance(caught.value.__cause__, requests.exceptions.ConnectionError)


def test_it_raises_unavailable_for_a_body_over_the_cap(client, mocked):
    client.max_body_bytes = 1000
    mocked.get(f"{BASE}/{PNID}", body=b"x" * 5000)  # no Content-Length: the stream is cut

    with pytest.raises(MetaUnavailableError, match="larger than 1000 bytes"):
        client.get_phone_number(PNID)


def test_it_raises_unavailable_for_a_declared_length_over_the_cap(client, mocked):
    mocked.get(f"{BASE}/{PNID}", body=b"x" * 2_000_001, auto_calculate_content_length=True)

    with pytest.raises(MetaUnavailableError, match="too large"):
        client.get_phone_number(PNID)


# --- retries -----------------------------------------------------------------------------------------


def test_it_retries_a_get_on_503_with_backoff(client, mocked, sleeps):
    url = f"{BASE}/{PNID}"
    mocked.get(url, json=load("error_2_service_unavailable.json"), status=503)
    mocked.get(url, body=requests.exceptions.ReadTimeout("slow"))
    mocked.get(url, json=load("phone_number_status_only.json"))

    info = client.get_phone_number(PNID)

    assert info.status == "CONNECTED"
    assert len(mocked.calls) == 3
    assert sleeps == [0.2, 0.5]


def test_it_gives_up_after_the_read_retries(mocked, sleeps):
    client = MetaClient(TOKEN, base_url=BASE, connect_timeout=1, read_timeout=1, read_retries=1)
    mocked.get(
        f"{BASE}/{WABA}/phone_numbers", json=load("error_131000_something_went_wrong.json"), status=500
    )

    with pytest.raises(MetaUnavailableError):
        client.list_phone_numbers(WABA)

    assert len(mocked.calls) == 2
    assert sleeps == [0.2]


def test_it_does_not_retry_a_refused_get(client, mocked, sleeps):
    mocked.get(f"{BASE}/{PNID}", json=load("error_190_expired.json"), status=401)

    with pytest.raises(MetaRefusedError):
        client.get_phone_number(PNID)

    assert len(mocked.calls) == 1
    assert sleeps == []


@pytest.mark.parametrize(
    "failure",
    [
        {"json": load("error_2_service_unavailable.json"), "status": 503},
        {"body": requests.exceptions.ReadTimeout("slow")},
        {"body": requests.exceptions.ConnectionError("reset")},
    ],
)
def test_it_never_retries_a_post(client, mocked, sleeps, failure):
    mocked.post(f"{BASE}/{PNID}/register", **failure)

    with pytest.raises((MetaUnavailableError, MetaTimeoutError)):
        client.register(PNID, "123456")

    assert len(mocked.calls) == 1
    assert sleeps == []


# --- input checks ------------------------------------------------------------------------------------

BAD_IDS = ["", "../123", "123/register", "123?fields=x", "12 3", "1#x", "x" * 65, "١٢٣", "123\n"]


@pytest.mark.parametrize("bad_id", BAD_IDS)
@pytest.mark.parametrize(
    "call",
    [
        lambda c, i: c.get_phone_number(i),
        lambda c, i: c.list_phone_numbers(i),
        lambda c, i: c.add_phone_number(i, cc="1", phone_number="6315555555", verified_name="X"),
        lambda c, i: c.request_code(i, method="SMS", language="en_US"),
        lambda c, i: c.verify_code(i, "123456"),
        lambda c, i: c.register(i, "123456"),
        lambda c, i: c.deregister(i),
        lambda c, i: c.subscribe_app(i),
    ],
)
def test_it_refuses_bad_ids_before_any_http(client, mocked, call, bad_id):
    with pytest.raises(ValueError):
        call(client, bad_id)

    assert len(mocked.calls) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.request_code(PNID, method="IVR", language="es"),
        lambda c: c.request_code(PNID, method="SMS", language="es&x=1"),
        lambda c: c.verify_code(PNID, "12ab56"),
        lambda c: c.register(PNID, "12345"),
        lambda c: c.register(PNID, "1234567"),
        lambda c: c.register(PNID, "123456\n"),
        lambda c: c.add_phone_number(WABA, cc="+503", phone_number="77654321", verified_name="X"),
        lambda c: c.add_phone_number(WABA, cc="503", phone_number="", verified_name="X"),
        lambda c: c.add_phone_number(WABA, cc="503", phone_number="77654321", verified_name=" "),
    ],
)
def test_it_refuses_bad_arguments_before_any_http(client, mocked, call):
    with pytest.raises(ValueError):
        call(client)

    assert len(mocked.calls) == 0


@pytest.mark.parametrize("token", ["", "two words", "line\nbreak", "trailing\n", "tab\t", "ñandú"])
def test_it_refuses_a_malformed_token_without_echoing_it(token):
    with pytest.raises(ValueError) as caught:
        MetaClient(token, base_url=BASE)

    if token:
        assert token not in str(caught.value)


# --- the token stays secret ----------------------------------------------------------------------------


def test_it_hides_the_token_from_repr(client):
    assert TOKEN not in repr(client)
    assert TOKEN not in str(client)
    assert "***" in repr(client)


@pytest.mark.parametrize(
    "failure",
    [
        {"json": load("error_190_expired.json"), "status": 401},
        {"json": load("error_131000_something_went_wrong.json"), "status": 500},
        {"body": "<html>502</html>", "status": 502},
        {"body": "{not json", "status": 200},
        {"body": requests.exceptions.ConnectTimeout("connect")},
        {"body": requests.exceptions.ReadTimeout("read")},
        {"body": requests.exceptions.ConnectionError("reset")},
        {"body": b"x" * 3_000_000},
    ],
)
def test_it_keeps_the_token_out_of_errors_and_logs(client, mocked, sleeps, caplog, failure):
    caplog.set_level(logging.DEBUG)
    mocked.get(f"{BASE}/{PNID}", **failure)

    with pytest.raises(MetaError) as caught:
        client.get_phone_number(PNID)

    error = caught.value
    assert TOKEN not in str(error)
    assert TOKEN not in repr(error)
    assert TOKEN not in "".join(traceback.format_exception(error))
    assert TOKEN not in caplog.text
    assert caplog.records, "each attempt is logged"


def test_it_scrubs_a_token_echoed_by_meta(client, mocked):
    body = {"error": {"message": f"Malformed access token {TOKEN}", "type": "OAuthException", "code": 190}}
    mocked.get(f"{BASE}/{PNID}", json=body, status=400)

    with pytest.raises(MetaRefusedError) as caught:
        client.get_phone_number(PNID)

    assert TOKEN not in str(caught.value)
    assert TOKEN not in caught.value.message


def test_it_logs_method_path_status_time_and_fbtrace_id(client, mocked, caplog):
    caplog.set_level(logging.DEBUG, logger="whatsapp.meta")
    mocked.post(f"{BASE}/{PNID}/register", json={"success": True}, headers={"x-fb-trace-id": "TRACE123"})
    mocked.post(f"{BASE}/{PNID}/deregister", json=load("error_133016_register_rate_limit.json"), status=400)

    client.register(PNID, "654321")
    with pytest.raises(MetaRefusedError):
        client.deregister(PNID)

    ok, refused = (record.getMessage() for record in caplog.records)
    assert ok.startswith(f"Meta POST /{PNID}/register -> 200 in ")
    assert "fbtrace_id=TRACE123" in ok
    assert f"Meta POST /{PNID}/deregister -> 400" in refused
    assert "fbtrace_id=A1b2C3d4E5f6G7h8" in refused
    assert "654321" not in caplog.text  # never the body (the PIN)
