"""The whole walk a newcomer takes on the settings page, in a browser, as `scripts/run` starts things.

The simulated Meta (`devtools/fake_graph.py --demo-waba`), the server and the task worker
(`manage.py run_worker`) are separate processes on one database (SQLite under runserver, as
`scripts/run`; PostgreSQL under gunicorn). Meta answers every Graph call in 3 s. Following
only the page, an admin connects a new number by its code, switches to another number and back,
and at every page: the health panel agrees with the status and never describes a number the
clinic no longer has, the buttons say they are talking to Meta while they wait, no answer is a
500, the Spanish page has no English, and there is always a next thing to do. Then a clinic
registers A, B and A again: A comes back with the PIN it was given (`NumberPin`), no PIN asked.
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from playwright.sync_api import Browser, Locator, Page, Response, expect

from tests.e2e.conftest import (
    MANAGE,
    PYTHON,
    Processes,
    ServerProcess,
    create_throwaway_database,
    free_port,
    gunicorn_argv,
    product_env,
    run_manage,
)

from .words import english_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.timeout(420)]

WABA = "102290129340398"  # the demo WABA scripts/run seeds (devtools.fake_graph.DEMO_NUMBERS)
TOKEN = "EAADEMOsimulatedACCESStokenFORtheDEMOclinic0001"
DEMO_ADMIN = "admin@demo.clinic"
PASSWORD = "walk-" + secrets.token_urlsafe(12)
CONNECTED_ID = "109000000000001"  # the demo number already on the Cloud API
META_SECONDS = 3.0
# An action may make several Graph calls at 3 s each, on a machine busy with other tests.
ACTION_MS = 90_000
STEP_MS = 60_000
# A check queued by a change of the connection runs in the worker: reloading as the page says.
HEALTH_SECONDS = 120.0

# The words the walk reads and presses, per language (what a person sees, never an id).
WORDS = {
    "es": {
        "email": "Correo electrónico",
        "password": "Contraseña",
        "sign_in": "Iniciar sesión",
        "number": "Número de WhatsApp",
        "send_code": "Enviar el código",
        "code": "Código",
        "verify": "Verificar",
        "check_now": "Comprobar ahora",
        "save_credentials": "Guardar credenciales",
        "credentials": "Credenciales de Meta y ajustes del webhook",
        "new_number": "Registrar un número nuevo",
        "continue": "Continuar",
        "disconnect": "Desconectar",
        "busy": "Hablando con Meta… puede tardar hasta 25 segundos",
        "active": "Activo",
        "disconnected": "Desconectado",
        "pending_otp": "Esperando el código",
        "broken": "Rota",
        "step_number": "2. Número",
        "step_code": "3. Código",
        "checked": "Comprobado:",
        "quality": {"UNKNOWN": "Todavía sin calificar", "YELLOW": "Regular"},
    },
    "en": {
        "email": "Email",
        "password": "Password",
        "sign_in": "Sign in",
        "number": "WhatsApp number",
        "send_code": "Send the code",
        "code": "Code",
        "verify": "Verify",
        "check_now": "Check now",
        "new_number": "Register a new number",
        "continue": "Continue",
        "busy": "Talking to Meta… this can take up to 25 seconds",
        "active": "Active",
        "disconnected": "Disconnected",
        "pending_otp": "Waiting for the code",
        "broken": "Broken",
        "step_number": "2. Number",
        "step_code": "3. Code",
        "checked": "Checked:",
        "quality": {"UNKNOWN": "Not rated yet"},
    },
}


# --- the stack: simulated Meta, server, worker -------------------------------------------------


@dataclass
class Stack:
    origin: str
    fake: str
    env: dict[str, str]
    server: ServerProcess
    worker: ServerProcess

    def control(self, method: str, path: str, body: dict | None = None) -> Any:
        answer = requests.request(method, f"{self.fake}/_fake{path}", json=body, timeout=10)
        assert answer.ok, answer.text
        return answer.json() if answer.content else None

    def meta_answers_in(self, seconds: float) -> None:
        """Every Graph call (not the fake's control API) waits `seconds` before its answer."""
        self.control("DELETE", "/faults")
        if seconds:
            self.control(
                "POST", "/faults", {"kind": "delay", "seconds": seconds, "times": 100_000, "method": "*"}
            )

    def new_clinic(self, name: str, admin: str) -> None:
        run_manage(
            {**self.env, "CLINIC_USER_PASSWORD": PASSWORD}, "create_clinic", name, "--admin-email", admin
        )

    def state(self, admin: str) -> dict[str, Any]:
        """The database behind the page: the admin's clinic's connection, its health row, its PINs."""
        shown = run_manage({**self.env, "WALK_ADMIN": admin}, "shell", "-c", DB_STATE).stdout
        return json.loads([line for line in shown.splitlines() if line.startswith("{")][-1])


# Read in the product's own process (the PINs are encrypted with its key).
DB_STATE = """
import json, os
from clinics.models import Clinic
from whatsapp.models import NumberPin, WhatsAppAccount, WhatsAppHealth
clinic = Clinic.objects.get(members__email=os.environ["WALK_ADMIN"])
account = WhatsAppAccount.objects.get(clinic=clinic)
health = WhatsAppHealth.objects.filter(pk=account.pk).first()
print(json.dumps({
    "status": account.status,
    "number": account.number,
    "phone_number_id": account.phone_number_id,
    "meta_code": account.meta_code,
    "health": None if health is None or health.checked_at is None else {
        "verdict": health.verdict, "checked_phone_number_id": health.checked_phone_number_id,
    },
    "pins": {
        row.phone_number_id: {"pin": row.pin, "unconfirmed": row.unconfirmed_pin}
        for row in NumberPin.objects.filter(clinic=clinic)
    },
}))
"""


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ],
)
def stack(request) -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="clinics-walk-"))
    processes = Processes(tmp)
    db = create_throwaway_database("clinics_walk", tmp, postgres=request.param == "postgres")
    try:
        base = product_env(DATABASE_URL=db.url, SIGN_IN_FAILURE_LIMIT="1000", LOG_LEVEL="WARNING")
        fake_port = free_port()
        fake = f"http://127.0.0.1:{fake_port}"
        processes.start(
            "fake-graph",
            [PYTHON, "-m", "devtools.fake_graph", "--port", str(fake_port), "--demo-waba", WABA],
            base,
        ).wait_ready(f"{fake}/_fake/settings")
        port = free_port()
        origin = f"http://127.0.0.1:{port}"
        # What scripts/run sets: development mode, Meta simulated, the demo clinic's credentials.
        env = {
            **base,
            "DEBUG": "true",
            "META_SIMULATED": "true",
            "META_GRAPH_URL": f"{fake}/v26.0",
            "DEMO_WABA_ID": WABA,
            "DEMO_ACCESS_TOKEN": TOKEN,
            "DEMO_PASSWORD": PASSWORD,
        }
        run_manage(env, "migrate", "--no-input", "-v", "0")
        run_manage(env, "ensure_demo_clinic", "--base-url", origin)
        if request.param == "sqlite":
            server = processes.start(
                "runserver",
                [PYTHON, MANAGE, "runserver", "--noreload", "--skip-checks", f"127.0.0.1:{port}"],
                env,
            )
        else:
            # Threads: the page's status polls arrive while an action waits on Meta.
            threads = {**env, "GUNICORN_CMD_ARGS": "--threads 4"}
            server = processes.start("gunicorn", gunicorn_argv(port, workers=2), threads)
        server.wait_ready(f"{origin}/healthz/", timeout=60)
        worker = processes.worker(env)
        yield Stack(origin=origin, fake=fake, env=env, server=server, worker=worker)
        logs = server.log() + worker.log()
        assert "Traceback" not in logs, logs[-4000:]
    finally:
        processes.stop_all()
        db.drop()


@pytest.fixture
def slow_meta(stack: Stack) -> Iterator[Stack]:
    stack.meta_answers_in(META_SECONDS)
    yield stack
    stack.meta_answers_in(0)


# --- a person on the page ----------------------------------------------------------------------


# While a form's answer is awaited Playwright cannot read the page (it waits for the next one), so
# the page writes down what it shows, at the submission and a second later, for the next page.
WATCH_FORM = """(action) => {
    const form = document.querySelector(`form[action="${action}"]`);
    const look = () => {
        const note = form.querySelector(".busy-note");
        return {
            disabled: [...form.querySelectorAll("button")].every((button) => button.disabled),
            busy: form.getAttribute("aria-busy"),
            note: note ? note.textContent : "",
        };
    };
    sessionStorage.removeItem("walk-waiting");
    form.addEventListener("submit", () => {
        const seen = [look()];
        sessionStorage.setItem("walk-waiting", JSON.stringify(seen));
        setTimeout(() => {
            seen.push(look());
            sessionStorage.setItem("walk-waiting", JSON.stringify(seen));
        }, 1000);
    });
}"""


@dataclass
class Walker:
    """One admin's browser tab, with what every page must hold checked after each step."""

    page: Page
    language: str
    origin: str
    meta_slow: bool
    # What Meta rates each number (by how the page writes it): the panel never shows another's.
    qualities: dict[str, str] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    pages_seen: int = 0

    @property
    def words(self) -> dict[str, Any]:
        return WORDS[self.language]

    def __post_init__(self) -> None:
        self.page.on("response", self._note)

    def _note(self, response: Response) -> None:
        # Every answer the tab got: no 500 anywhere, and no page (document) that is an error.
        if response.status >= 500 or (
            response.request.resource_type == "document" and response.status >= 400
        ):
            self.failures.append(f"{response.status} {response.request.method} {response.url}")

    def sign_in(self, email: str) -> None:
        page = self.page
        page.goto(f"{self.origin}/accounts/login/")
        page.get_by_label(self.words["email"]).fill(email)
        page.get_by_label(self.words["password"]).fill(PASSWORD)
        page.get_by_role("button", name=self.words["sign_in"]).click()
        expect(page).to_have_url(re.compile(r"/settings/"), timeout=STEP_MS)
        self.look()

    def badge(self) -> Locator:
        return self.page.locator("#wa-status-badge")

    def panel(self) -> Locator:
        return self.page.locator("#health")

    def press(self, name: str, *, within: str = "#whatsapp") -> None:
        """Press a button that asks Meta: while the server waits, its form is disabled and says why."""
        page = self.page
        button = page.locator(within).get_by_role("button", name=name, exact=True)
        page.evaluate(WATCH_FORM, button.locator("xpath=ancestor::form").get_attribute("action"))
        with page.expect_navigation(timeout=ACTION_MS):
            button.click()
        seen = page.evaluate("() => JSON.parse(sessionStorage.getItem('walk-waiting'))")
        # At the click and, when Meta takes 3 s a call, a second later: disabled, busy, saying why.
        assert seen is not None and len(seen) == (2 if self.meta_slow else 1), seen
        for moment in seen:
            assert (moment["disabled"], moment["busy"]) == (True, "true"), seen
            assert moment["note"].startswith(self.words["busy"]), seen
        self.look()

    def look(self) -> None:
        """What every settings page must hold, whatever the step."""
        page = self.page
        page.wait_for_load_state()
        self.pages_seen += 1
        assert not self.failures, self.failures
        expect(page).to_have_url(re.compile(r"/settings/"))
        status = page.locator("#wa-status").get_attribute("data-status")
        state = self.panel().get_attribute("data-health-state")
        verdict = self.panel().locator("#health-verdict")
        # The panel agrees with the status.
        if status in ("active", "verifying", "failed"):
            assert state in ("pending", "unchecked", "current"), (status, state)
        else:
            assert state == "none", (status, state)
            expect(verdict).not_to_have_class(re.compile(r"badge--broken"))
        if status == "active":
            expect(verdict).not_to_have_class(re.compile(r"badge--broken"))
            expect(verdict).not_to_have_text(self.words["broken"])
        # A result is shown only when it is about the number the clinic has now.
        quality = self.panel().locator("#health-quality")
        if state in ("none", "unchecked"):
            expect(quality).to_have_count(0)
        number = page.locator("#wa-status-number").inner_text()
        if quality.count() and number in self.qualities:
            expect(quality).to_contain_text(self.qualities[number])
        # No dead end: the step the page is at has a button to press, and it can be pressed.
        forward = page.locator("#whatsapp .step button[type=submit]:visible, #health button:visible")
        expect(forward.first).to_be_enabled()
        if self.language == "es":
            # The pickers' options are place and currency names from CLDR ("Swift Current").
            options = set(page.locator("select option").all_inner_texts())
            lines = [line for line in page.locator("body").inner_text().splitlines() if line not in options]
            assert english_in("\n".join(lines)) == [], english_in("\n".join(lines))

    def reload_until_checked(self) -> None:
        """Reload, as the panel asks, until the worker's check of this number is shown."""
        deadline = time.monotonic() + HEALTH_SECONDS
        while self.panel().get_attribute("data-health-state") != "current":
            assert time.monotonic() < deadline, "the queued health check never ran"
            self.page.wait_for_timeout(1000)  # a person waiting a moment before reloading
            self.page.reload()
            self.look()

    def quality(self) -> str:
        return self.panel().locator("#health-quality").inner_text()

    def connect_by_code(self, number: str) -> None:
        """Step 2 and 3: the number, then the code the simulated Meta sent (shown on the page)."""
        page, words = self.page, self.words
        expect(page.locator(".steps__item--current")).to_have_text(words["step_number"])
        page.get_by_label(words["number"]).fill(number)
        self.press(words["send_code"])
        expect(self.badge()).to_have_text(words["pending_otp"])
        expect(page.locator(".steps__item--current")).to_have_text(words["step_code"])
        code = page.locator("#simulated-code strong").inner_text()
        assert re.fullmatch(r"[0-9]{6}", code), code
        page.locator("#verify").get_by_label(words["code"]).fill(code)
        self.press(words["verify"])
        # Verified at once, or "verifying" while the page polls Meta and reloads itself.
        expect(self.badge()).to_have_text(words["active"], timeout=STEP_MS)
        self.look()

    def switch_to(self, number_id: str, display: str) -> None:
        """Another number already on the Cloud API: its id under the credentials, then its check."""
        page = self.page
        page.get_by_text(self.words["credentials"]).click()
        page.locator("#cred_phone_number_id").fill(number_id)
        self.press(self.words["save_credentials"])
        expect(self.badge()).to_have_text(self.words["active"])
        expect(page.locator("#wa-status-number")).to_have_text(display)
        self.reload_until_checked()


def new_walker(browser: Browser, stack: Stack, language: str, *, meta_slow: bool = True) -> Walker:
    locale = {"es": "es-SV", "en": "en-US"}[language]
    page = browser.new_context(locale=locale, viewport={"width": 1280, "height": 900}).new_page()
    page.set_default_timeout(STEP_MS)
    return Walker(page=page, language=language, origin=stack.origin, meta_slow=meta_slow)


def simulated_id(page: Page, display: str) -> str:
    """A number's phone number id, read from the simulated Meta's list on the page."""
    row = page.locator("#simulated-numbers li").filter(has_text=display)
    return row.locator("code").nth(1).inner_text()


# --- the walk ----------------------------------------------------------------------------------


def test_the_whole_walk_in_spanish_with_meta_answering_in_3_seconds(browser, slow_meta: Stack, shot):
    stack = slow_meta
    # The demo number already on the Cloud API rates "fair": the panel tells the two numbers apart.
    stack.control("POST", f"/numbers/{CONNECTED_ID}", {"quality_rating": "YELLOW"})
    walker = new_walker(browser, stack, "es")
    page, words = walker.page, walker.words
    walker.qualities = {
        "+503 7765 4321": words["quality"]["UNKNOWN"],
        "+503 2200 0001": words["quality"]["YELLOW"],
    }
    walker.sign_in(DEMO_ADMIN)
    expect(walker.badge()).to_have_text(words["disconnected"])
    expect(walker.panel().locator("#health-verdict")).to_have_text("Nada que comprobar todavía")

    # A new number, by the code Meta sends.
    walker.connect_by_code("+503 7765-4321")
    expect(page.locator("#wa-status-number")).to_have_text("+503 7765 4321")
    shot(page, "walk-01-active-es")
    walker.reload_until_checked()
    number_a = stack.state(DEMO_ADMIN)["phone_number_id"]
    expect(walker.panel().locator("#health-quality")).to_contain_text(words["quality"]["UNKNOWN"])
    # The one "check now" asks Meta again, and says so while it waits.
    walker.press(words["check_now"], within="#health")
    expect(page.locator("p.message--info")).to_contain_text(words["checked"])
    expect(walker.panel()).to_have_attribute("data-health-state", "current")
    shot(page, "walk-02-checked-es")

    # Another number: the one already on the Cloud API, by its id, under the credentials. Only
    # the worker checks it (nothing else runs): being checked, then B's own result, never A's.
    walker.switch_to(CONNECTED_ID, "+503 2200 0001")
    expect(walker.panel().locator("#health-quality")).to_contain_text(words["quality"]["YELLOW"])
    db = stack.state(DEMO_ADMIN)
    assert (db["status"], db["phone_number_id"]) == ("active", CONNECTED_ID)
    assert db["health"]["checked_phone_number_id"] == CONNECTED_ID
    shot(page, "walk-03-switched-es")

    # And back to A, by the id the simulated Meta lists for it on the page.
    assert simulated_id(page, "+503 7765 4321") == number_a
    walker.switch_to(number_a, "+503 7765 4321")
    expect(walker.panel().locator("#health-quality")).to_contain_text(words["quality"]["UNKNOWN"])
    shot(page, "walk-04-back-es")

    db = stack.state(DEMO_ADMIN)
    assert (db["status"], db["number"], db["phone_number_id"]) == ("active", "+50377654321", number_a)
    assert db["health"]["checked_phone_number_id"] == number_a
    assert db["health"]["verdict"] != "broken"
    assert walker.failures == []


def test_the_walk_in_english_from_the_first_step(browser, slow_meta: Stack):
    stack = slow_meta
    stack.new_clinic("Clinic English", "admin@english.example")
    walker = new_walker(browser, stack, "en")
    page, words = walker.page, walker.words
    walker.sign_in("admin@english.example")
    expect(walker.panel().locator("#health-verdict")).to_have_text("Nothing to check yet")

    # Step 1 for a new number: the account and the token (nothing asked of Meta yet).
    page.get_by_text(words["new_number"], exact=True).click()
    page.locator("#acct_business_account_id").fill("102290129340401")
    page.locator("#acct_access_token").fill(TOKEN)
    page.get_by_role("button", name=words["continue"]).click()
    walker.look()
    walker.connect_by_code("+503 7765-5555")
    walker.reload_until_checked()
    expect(walker.panel().locator("#health-quality")).to_contain_text(words["quality"]["UNKNOWN"])
    db = stack.state("admin@english.example")
    assert (db["status"], db["number"]) == ("active", "+50377655555")
    assert db["health"]["checked_phone_number_id"] == db["phone_number_id"]
    assert walker.failures == []


# --- register A, B, then A again ---------------------------------------------------------------


def test_register_a_then_b_then_a_again_keeps_each_numbers_pin(browser, stack: Stack, shot):
    stack.meta_answers_in(0)
    admin = "admin@vuelta.example"
    stack.new_clinic("Clínica Vuelta", admin)
    walker = new_walker(browser, stack, "es", meta_slow=False)
    page, words = walker.page, walker.words
    walker.sign_in(admin)
    page.get_by_text(words["new_number"], exact=True).click()
    page.locator("#acct_business_account_id").fill("102290129340402")
    page.locator("#acct_access_token").fill(TOKEN)
    page.get_by_role("button", name=words["continue"]).click()
    walker.look()

    def disconnect(typed: str) -> None:
        page.locator("#id_confirmation").fill(typed)
        walker.press(words["disconnect"], within="#deregister")
        expect(walker.badge()).to_have_text(words["disconnected"])

    walker.connect_by_code("+503 7000-1111")
    a = stack.state(admin)["phone_number_id"]
    disconnect("+503 7000-1111")
    walker.connect_by_code("+503 7000-2222")
    b = stack.state(admin)["phone_number_id"]
    disconnect("+503 7000-2222")
    walker.connect_by_code("+503 7000-1111")
    shot(page, "walk-05-a-again-es")

    # No PIN asked: A went back with the PIN this service gave it the first time.
    expect(page.locator("#wa-status-number")).to_have_text("+503 7000 1111")
    expect(page.locator("div#pin")).to_have_count(0)
    db = stack.state(admin)
    assert (db["status"], db["number"], db["phone_number_id"], db["meta_code"]) == (
        "active",
        "+50370001111",
        a,
        None,
    )
    at_meta = stack.control("GET", "/state")["numbers"]
    assert db["pins"] == {
        a: {"pin": at_meta[a]["pin"], "unconfirmed": None},
        b: {"pin": at_meta[b]["pin"], "unconfirmed": None},
    }
    assert all(re.fullmatch(r"[0-9]{6}", row["pin"]) for row in db["pins"].values())
    # The simulated Meta's list names a PIN another provider set; these PINs are this service's own,
    # never shown (it listed A's as "from another provider", in clear).
    for display, number_id in (("+503 7000 1111", a), ("+503 7000 2222", b)):
        listed = page.locator("#simulated-numbers li").filter(has_text=display).inner_text()
        assert ("ya está en" if number_id == a else "retirado de") in listed, listed
        # (Plain asserts: a failure must not print the PIN.)
        assert "otro proveedor" not in listed, display
        assert db["pins"][number_id]["pin"] not in listed, display
    # Meta was never refused a PIN on the way (133005).
    registers = stack.control("GET", f"/requests?method=POST&path=/({a}|{b})/register$")
    assert [entry["status"] for entry in registers] == [200, 200, 200]
    assert walker.failures == []
