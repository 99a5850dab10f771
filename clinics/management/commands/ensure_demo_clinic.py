"""Development only: the demo clinic, its admin and a superuser, with stable logins printed each start."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from clinics import services
from clinics.bot_keys import bot_key_is_current, bot_key_issue
from clinics.models import Clinic, User
from clinics.selectors import whatsapp_account_of
from clinics.simulated_meta import simulated_webhook_target
from messaging.bot_endpoint import bot_endpoint_ping, bot_endpoint_rotate_secret, bot_endpoint_save_url
from whatsapp.services import whatsapp_store_credentials

DEMO_EMAIL = "admin@demo.clinic"
DEMO_SUPERUSER_EMAIL = "superuser@demo.clinic"
DEMO_BOT_KEY_NAME = "Demo bot"


class Command(BaseCommand):
    help = (
        "Development only: make sure the demo clinic, its admin and a superuser exist, with the "
        "passwords of DEMO_PASSWORD and DEMO_SUPERUSER_PASSWORD (scripts/run keeps them in .env), "
        "and print how to sign in."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--base-url", default="http://127.0.0.1:8000", help="Where the server answers.")
        parser.add_argument("--bot-url", default="", help="The demo bot's URL (devtools/demo_bot.py).")
        parser.add_argument(
            "--bot-secret-file", default="", help="Where the demo bot reads its signing secret."
        )
        parser.add_argument(
            "--bot-key-file", default="", help="Where the demo bot reads its bot key, to answer through 16."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("ensure_demo_clinic is for development (DEBUG on) only.")
        password = os.environ.get("DEMO_PASSWORD") or secrets.token_urlsafe(12)
        superuser_password = os.environ.get("DEMO_SUPERUSER_PASSWORD") or secrets.token_urlsafe(12)
        with transaction.atomic():
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None:
                clinic = services.clinic_create(name="Clínica Demo San Salvador", city="San Salvador")
                user = services.clinic_add_user(
                    clinic=clinic, email=DEMO_EMAIL, password=password, role=User.Role.ADMIN
                )
            elif not user.check_password(password):
                user.set_password(password)
                user.save(update_fields=["password"])
            superuser = User.objects.filter(email=DEMO_SUPERUSER_EMAIL).first()
            if superuser is None:
                User.objects.create_superuser(email=DEMO_SUPERUSER_EMAIL, password=superuser_password)
            elif not superuser.check_password(superuser_password):
                superuser.set_password(superuser_password)
                superuser.save(update_fields=["password"])
        clinic = Clinic.objects.get(members=user)
        simulated = self._give_simulated_credentials(clinic)
        bot = self._wire_demo_bot(clinic, options["bot_url"], options["bot_secret_file"])
        base = options["base_url"].rstrip("/")
        if options["bot_key_file"]:
            self._give_bot_key(clinic, Path(options["bot_key_file"]))
            bot += "\n                   it answers each patient's message through 16 with its bot key"
        if simulated:
            # A number connected on an earlier run: its messages' statuses come back to its webhook.
            account = whatsapp_account_of(clinic)
            simulated_webhook_target(account, webhook_url=f"{base}{account.webhook_path}")
        meta = f"SIMULATED ({settings.META_GRAPH_URL})" if simulated else settings.META_GRAPH_URL
        self.stdout.write(
            "\n  Demo clinic ready.\n"
            f"    settings page: {base}/accounts/login/\n"
            f"      email:    {DEMO_EMAIL}\n"
            f"      password: {password}\n"
            f"    admin site:    {base}/admin/\n"
            f"      email:    {DEMO_SUPERUSER_EMAIL}\n"
            f"      password: {superuser_password}\n"
            f"    Meta:          {meta}\n"
            f"    Bot:           {bot}\n"
        )

    def _wire_demo_bot(self, clinic: Clinic, url: str, secret_file: str) -> str:
        """The demo clinic forwards patients' messages to the demo bot, which knows the signing secret."""
        if not (url and secret_file):
            return "none (scripts/run starts the demo bot)"
        path = Path(secret_file)
        saved = bot_endpoint_save_url(clinic_id=clinic.pk, url=url)
        secret = saved.new_secret
        if secret is None and not path.exists():
            secret = bot_endpoint_rotate_secret(clinic_id=clinic.pk)
        if secret is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(mode=0o600)
            path.write_text(secret + "\n")
        services.clinic_update_settings(clinic=clinic, data={"bot_enabled": True})
        ping = bot_endpoint_ping(clinic_id=clinic.pk)
        state = "live" if ping.live else f"not live ({ping.error or ping.status_code})"
        return f"{url} ({state}; patients' messages are forwarded to it)"

    def _give_bot_key(self, clinic: Clinic, path: Path) -> None:
        """The demo bot's key: the one written on an earlier run while it is still the clinic's, else a new one."""
        if path.exists() and bot_key_is_current(clinic=clinic, key=path.read_text().strip()):
            return
        _key, secret = bot_key_issue(clinic=clinic, name=DEMO_BOT_KEY_NAME)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secret + "\n")

    def _give_simulated_credentials(self, clinic: Clinic) -> bool:
        """With a simulated Meta, the demo clinic starts with credentials it knows (never over yours)."""
        waba, token = os.environ.get("DEMO_WABA_ID", ""), os.environ.get("DEMO_ACCESS_TOKEN", "")
        if not (settings.META_SIMULATED and waba and token):
            return False
        account = whatsapp_account_of(clinic)
        if not account.access_token and not account.business_account_id:
            whatsapp_store_credentials(account=account, business_account_id=waba, access_token=token)
        return True
