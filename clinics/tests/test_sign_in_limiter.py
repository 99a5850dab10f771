"""One sign-in limiter on every door: the API's token endpoint, the sign-in page and admin's login.

Failures only, per client address (`NUM_PROXIES` deep) and per account and address
together, in the shared cache; 429 with Retry-After. Failures from other addresses
never keep an account's owner out: many of them on one account send one e-mail.
"""

from __future__ import annotations

import pytest
from django.core import mail
from django.test import Client
from rest_framework.test import APIClient

from clinics import services
from clinics.models import ApiToken, Clinic, OutgoingEmail

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-9"  # the conftest personas' password
TOKEN_URL = "/api/auth/token/"
PAGE_URL = "/accounts/login/"
ADMIN_URL = "/admin/login/"
LIMIT = 10  # SIGN_IN_FAILURE_LIMIT's default
ALERT = 50  # SIGN_IN_ALERT_FAILURES' default
PROXY = "10.0.0.2"  # the load balancer or nginx: every connection comes from it


def _api(email: str, password: str, **extra: str):
    return APIClient(HTTP_ACCEPT_LANGUAGE="en").post(
        TOKEN_URL, {"email": email, "password": password}, format="json", **extra
    )


def _page(url: str, email: str, password: str, **extra: str):
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    response = client.post(url, {"username": email, "password": password}, **extra)
    return response, client


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- admin's login, the door that had no limit --------------------------------------------


def test_it_locks_the_admin_login_after_ten_wrong_passwords_from_one_address(superuser):
    answers = [_page(ADMIN_URL, superuser.email, f"guess-{n}")[0].status_code for n in range(LIMIT)]

    right, client = _page(ADMIN_URL, superuser.email, PASSWORD)
    elsewhere, other_client = _page(ADMIN_URL, superuser.email, PASSWORD, REMOTE_ADDR="198.51.100.30")

    assert answers == [200] * (LIMIT - 1) + [429]
    assert right.status_code == 429
    assert int(right["Retry-After"]) == 15 * 60
    assert "Too many failed sign-in attempts. Try again in 15 minutes." in right.content.decode()
    assert not _signed_in(client)
    # The lock is the guessing address's, not the account's.
    assert elsewhere.status_code == 302
    assert _signed_in(other_client)


def test_it_still_signs_in_to_admin_below_the_limit(superuser):
    for n in range(LIMIT - 2):
        _page(ADMIN_URL, superuser.email, f"guess-{n}")

    response, client = _page(ADMIN_URL, superuser.email, PASSWORD)

    assert response.status_code == 302
    assert _signed_in(client)


def test_the_lock_page_speaks_spanish(superuser):
    for n in range(LIMIT):
        _page(ADMIN_URL, superuser.email, f"guess-{n}")

    response = Client(HTTP_ACCEPT_LANGUAGE="es").post(
        ADMIN_URL, {"username": superuser.email, "password": PASSWORD}
    )

    assert response.status_code == 429
    assert "Demasiados intentos fallidos" in response.content.decode()


# --- the three doors count in the same buckets --------------------------------------------


def test_the_three_doors_count_in_the_same_buckets(clinic_admin, superuser):
    # One address alternating doors: the tenth failure locks it, whichever door.
    doors = [TOKEN_URL, PAGE_URL, ADMIN_URL]
    for n in range(LIMIT - 1):
        door = doors[n % 3]
        if door == TOKEN_URL:
            assert _api(clinic_admin.email, "guess", REMOTE_ADDR="192.0.2.1").status_code == 400
        else:
            assert _page(door, clinic_admin.email, "guess", REMOTE_ADDR="192.0.2.1")[0].status_code == 200
    assert _page(ADMIN_URL, clinic_admin.email, "guess", REMOTE_ADDR="192.0.2.1")[0].status_code == 429

    api = _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="192.0.2.1")
    page, client = _page(PAGE_URL, superuser.email, PASSWORD, REMOTE_ADDR="192.0.2.1")

    assert api.status_code == 429
    assert api.json() == {"detail": "Too many failed sign-in attempts. Try again in 15 minutes."}
    assert int(api["Retry-After"]) == 15 * 60
    assert page.status_code == 429
    assert not _signed_in(client)
    assert not ApiToken.objects.exists()
    # Every other address is untouched, the guessed account's own included.
    assert _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="198.51.100.1").status_code == 200
    assert _api(superuser.email, PASSWORD, REMOTE_ADDR="198.51.100.3").status_code == 200


# --- failures from other addresses never keep the owner out --------------------------------


@pytest.mark.parametrize("door", [TOKEN_URL, PAGE_URL, ADMIN_URL])
def test_an_attackers_failures_from_many_addresses_never_stop_the_owners_right_password(superuser, door):
    """The finding: ten wrong passwords from anywhere locked the superuser out of every door."""
    for n in range(3 * LIMIT):
        address = f"203.0.113.{n // 3 + 1}"  # three guesses each from ten addresses
        if n % 3 == 0:
            assert _api(superuser.email, f"guess-{n}", REMOTE_ADDR=address).status_code == 400
        else:
            assert _page(ADMIN_URL, superuser.email, f"guess-{n}", REMOTE_ADDR=address)[0].status_code == 200

    if door == TOKEN_URL:
        answer = _api(superuser.email, PASSWORD, REMOTE_ADDR="198.51.100.4")
        assert answer.status_code == 200
        assert ApiToken.objects.filter(user=superuser).count() == 1
    else:
        answer, client = _page(door, superuser.email, PASSWORD, REMOTE_ADDR="198.51.100.4")
        assert answer.status_code == 302
        assert _signed_in(client)


def test_an_owner_who_mistyped_below_the_limit_still_signs_in_after_an_attack(clinic_admin):
    for n in range(2 * LIMIT):
        _api(clinic_admin.email, "guess", REMOTE_ADDR=f"203.0.113.{n + 1}")
    for _ in range(LIMIT - 1):
        assert _api(clinic_admin.email, "typo", REMOTE_ADDR="198.51.100.5").status_code == 400

    assert _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="198.51.100.5").status_code == 200


def test_an_account_guessed_at_one_address_stays_open_at_another(clinic_admin):
    for _ in range(LIMIT):
        _api(clinic_admin.email, "guess", REMOTE_ADDR="203.0.113.7")

    assert _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="203.0.113.7").status_code == 429
    assert _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="203.0.113.8").status_code == 200


def test_an_account_and_its_address_share_no_bucket_with_a_run_on_spelling(clinic):
    # axes writes a bucket's values one after the other: account "ana@x.xn--11" at 2.3.4.5
    # and account "ana@x.xn--1" at 12.3.4.5 (punycode top-level domains may end in a digit)
    # must not be one bucket.
    services.clinic_add_user(clinic=clinic, email="ana@x.xn--11", password=PASSWORD)
    for _ in range(LIMIT):
        _api("ana@x.xn--1", "guess", REMOTE_ADDR="12.3.4.5")

    assert _api("ana@x.xn--11", PASSWORD, REMOTE_ADDR="2.3.4.5").status_code == 200


# --- many failures on one account: one e-mail, no lock -------------------------------------


def _guess_from_many_addresses(email: str, count: int, *, first: int = 1) -> None:
    for n in range(first, first + count):
        # Five guesses per address: each address stays below its own limit.
        assert _api(email, "not-it-7", REMOTE_ADDR=f"203.0.{n // 5}.{n % 5 + 1}").status_code == 400


def test_fifty_failures_in_an_hour_send_the_user_and_the_clinics_admins_one_email(
    clinic, clinic_admin, clinic_staff, tasks_run_inline
):
    Clinic.objects.filter(pk=clinic.pk).update(language="en")
    other_admin = services.clinic_add_user(
        clinic=clinic, email="second-admin@example.com", password=PASSWORD, role="admin"
    )

    _guess_from_many_addresses(clinic_staff.email, ALERT - 1)
    assert mail.outbox == []
    _guess_from_many_addresses(clinic_staff.email, 1, first=ALERT)
    _guess_from_many_addresses(clinic_staff.email, 30, first=ALERT + 1)

    # One e-mail per recipient, each a row of the e-mail outbox sent by the worker.
    assert sorted(message.to[0] for message in mail.outbox) == sorted(
        [clinic_staff.email, clinic_admin.email, other_admin.email]
    )
    assert all(len(message.to) == 1 for message in mail.outbox)
    assert OutgoingEmail.objects.filter(kind="sign_in_alert", state="done").count() == 3
    sent = mail.outbox[0]
    assert sent.subject == f"Many failed sign-ins to {clinic_staff.email}"
    assert (
        f"In the last hour 50 sign-ins to the account {clinic_staff.email} of Clínica San Salvador"
        in sent.body
    )
    assert "The account is not locked" in sent.body
    assert PASSWORD not in sent.body and "not-it-7" not in sent.body
    # And nothing was locked: the owner signs in.
    assert _api(clinic_staff.email, PASSWORD, REMOTE_ADDR="198.51.100.6").status_code == 200


def test_the_email_is_in_the_clinics_language(clinic, clinic_admin, tasks_run_inline):
    _guess_from_many_addresses(clinic_admin.email, ALERT)

    assert len(mail.outbox) == 1
    assert mail.outbox[0].subject == f"Muchos inicios de sesión fallidos en {clinic_admin.email}"


def test_the_email_is_queued_not_sent_in_the_request(clinic_admin, queued_tasks):
    _guess_from_many_addresses(clinic_admin.email, ALERT + 5)

    assert mail.outbox == []
    rows = list(OutgoingEmail.objects.filter(kind="sign_in_alert"))
    assert [row.to for row in rows] == [clinic_admin.email]
    assert [(result.task.name, result.kwargs) for result in queued_tasks] == [
        ("send_email", {"email_id": rows[0].pk})
    ]


def test_failures_refused_at_a_locked_address_do_not_count_toward_the_email(clinic_admin, queued_tasks):
    # One address is stopped at its own limit long before the account's threshold.
    answers = [_api(clinic_admin.email, "guess", REMOTE_ADDR="203.0.113.9").status_code for _ in range(ALERT)]

    assert answers.count(400) == LIMIT - 1
    assert list(queued_tasks) == []


def test_guesses_at_an_unknown_account_send_nothing(db, tasks_run_inline):
    _guess_from_many_addresses("nobody@example.com", ALERT)

    assert mail.outbox == []


def test_it_counts_failures_only(clinic_admin):
    # The page used to count successful sign-ins too: a busy office locked itself out.
    for _ in range(LIMIT + 2):
        response, client = _page(PAGE_URL, clinic_admin.email, PASSWORD)
        assert response.status_code == 302
        assert _signed_in(client)
    for _ in range(LIMIT + 2):
        assert _api(clinic_admin.email, PASSWORD).status_code == 200

    assert _page(PAGE_URL, clinic_admin.email, "wrong")[0].status_code == 200
    assert _api(clinic_admin.email, PASSWORD).status_code == 200


def test_a_success_does_not_wipe_an_address_count(clinic_admin, other_clinic_admin):
    # An attacker with an account of their own cannot reset their address by signing in to it.
    for n in range(LIMIT - 1):
        assert _api(f"made-up-{n}@example.com", "guess", REMOTE_ADDR="203.0.113.9").status_code == 400
    assert _api(other_clinic_admin.email, PASSWORD, REMOTE_ADDR="203.0.113.9").status_code == 200

    assert _api("made-up-x@example.com", "guess", REMOTE_ADDR="203.0.113.9").status_code == 429
    assert _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="203.0.113.9").status_code == 429


# --- per client address, NUM_PROXIES deep --------------------------------------------------


def test_it_ignores_a_forged_x_forwarded_for_without_proxies(clinic_admin):
    # NUM_PROXIES = 0: each made-up header value used to be a new bucket.
    answers = [
        _api(f"made-up-{n}@example.com", "guess", HTTP_X_FORWARDED_FOR=f"198.51.100.{n}").status_code
        for n in range(LIMIT)
    ]

    right = _api(clinic_admin.email, PASSWORD, HTTP_X_FORWARDED_FOR="198.51.100.200")

    assert answers == [400] * (LIMIT - 1) + [429]
    assert right.status_code == 429
    assert not ApiToken.objects.exists()


def test_behind_a_proxy_the_admin_signs_in_at_once_after_an_attacker_spent_the_limit(settings, superuser):
    """The finding: one bucket for everyone behind the load balancer locked the real admin out."""
    settings.NUM_PROXIES = 1
    # The attacker spends the limit on made-up accounts, each with a forged entry in front
    # of the one the proxy appends (their real address).
    for n in range(LIMIT):
        _page(
            ADMIN_URL,
            f"made-up-{n}@example.com",
            "guess",
            REMOTE_ADDR=PROXY,
            HTTP_X_FORWARDED_FOR=f"10.9.9.{n}, 203.0.113.66",
        )
    attacker, _client = _page(
        ADMIN_URL, "made-up-x@example.com", "guess", REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="203.0.113.66"
    )

    admin, client = _page(
        ADMIN_URL, superuser.email, PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.4"
    )
    token = _api(superuser.email, PASSWORD, REMOTE_ADDR=PROXY, HTTP_X_FORWARDED_FOR="198.51.100.4")

    assert attacker.status_code == 429
    assert admin.status_code == 302
    assert _signed_in(client)
    assert token.status_code == 200
    assert ApiToken.objects.filter(user=superuser).count() == 1


def test_a_username_written_like_an_address_does_not_count_against_that_address(clinic_admin):
    # axes keys both buckets by the bare value: an "e-mail" 198.51.100.7 must not fill
    # the bucket of the address 198.51.100.7 (everyone behind it would be locked out).
    for n in range(LIMIT):
        _page(PAGE_URL, "198.51.100.7", "guess", REMOTE_ADDR=f"192.0.2.{n + 1}")

    response, client = _page(PAGE_URL, clinic_admin.email, PASSWORD, REMOTE_ADDR="198.51.100.7")

    assert response.status_code == 302
    assert _signed_in(client)


def test_an_ipv6_client_counts_as_its_slash_64(clinic_admin):
    # One IPv6 client holds a whole /64: 2**64 addresses must not be 2**64 buckets.
    for n in range(LIMIT):
        _api(f"made-up-{n}@example.com", "guess", REMOTE_ADDR=f"2001:db8:1:2::{n + 1:x}")

    same_network = _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="2001:db8:1:2:ffff::1")
    next_network = _api(clinic_admin.email, PASSWORD, REMOTE_ADDR="2001:db8:1:3::1")

    assert same_network.status_code == 429
    assert next_network.status_code == 200


# --- spellings of one e-mail ---------------------------------------------------------------

VICTIM = "sara@clínica.example"
# Each is the same address once canonical (NFKC, case-folded): the same account and bucket.
SPELLINGS = {
    "long s": "\u017fara@clínica.example",
    "full-width letters": "\uff53\uff41\uff52\uff41@clínica.example",
    "combining acute accent": "sara@cli\u0301nica.example",
    "upper case": "SARA@CLÍNICA.EXAMPLE",
    "full-width capitals": "\uff33\uff21\uff32\uff21@\uff23\uff2c\u00cd\uff2e\uff29\uff23\uff21.example",
}


@pytest.fixture
def victim(clinic):
    return services.clinic_add_user(clinic=clinic, email=VICTIM, password=PASSWORD, role="admin")


@pytest.mark.parametrize("spelling", list(SPELLINGS.values()), ids=list(SPELLINGS))
def test_every_spelling_shares_the_victims_bucket_at_an_address(victim, spelling):
    # The finding: with the victim locked, other spellings had buckets of their own.
    for _ in range(LIMIT):
        _api(VICTIM, "guess", REMOTE_ADDR="192.0.2.1")

    api = _api(spelling, PASSWORD, REMOTE_ADDR="192.0.2.1")
    page, client = _page(PAGE_URL, spelling, PASSWORD, REMOTE_ADDR="192.0.2.1")
    elsewhere = _api(spelling, PASSWORD, REMOTE_ADDR="198.51.100.10")

    assert (api.status_code, page.status_code) == (429, 429)
    assert not _signed_in(client)
    assert elsewhere.status_code == 200
    assert ApiToken.objects.get().user == victim


@pytest.mark.parametrize("spelling", list(SPELLINGS.values()), ids=list(SPELLINGS))
def test_every_spelling_counts_toward_the_victims_email(victim, spelling, queued_tasks):
    _guess_from_many_addresses(VICTIM, ALERT - 1)
    _guess_from_many_addresses(spelling, 1, first=ALERT)

    assert list(OutgoingEmail.objects.filter(kind="sign_in_alert").values_list("to", flat=True)) == [VICTIM]
    assert len(queued_tasks) == 1


@pytest.mark.parametrize("spelling", list(SPELLINGS.values()), ids=list(SPELLINGS))
def test_a_spelling_reaches_only_its_own_account(victim, other_clinic_admin, spelling):
    token = _api(spelling, PASSWORD)

    assert token.status_code == 200
    assert ApiToken.objects.get().user == victim


@pytest.mark.parametrize(
    "lookalike",
    ["s\u0131ra@clínica.example", "sara@cl\u0131nica.example", "\u0455ara@clínica.example"],
    ids=["dotless i", "dotless i in the domain", "cyrillic dze"],
)
def test_a_lookalike_reaches_no_account(victim, lookalike):
    # Not the same letters: another address, which no one has (PostgreSQL's UPPER()
    # folded dotless i into I when the lookup was case-insensitive).
    api = _api(lookalike, PASSWORD)
    page, client = _page(PAGE_URL, lookalike, PASSWORD)

    assert api.status_code == 400
    assert page.status_code == 200
    assert not _signed_in(client)
    assert not ApiToken.objects.exists()
