"""Recompute every audit chain: a removed or edited row is reported, and the exit status is 1."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from common.audit import audit_chains, audit_verify_chain


class Command(BaseCommand):
    help = "Check that no audit row was removed or edited (exit status 1 when one was)."

    def handle(self, *args: Any, **options: Any) -> None:
        chains = audit_chains()
        problems = [problem for chain in chains for problem in audit_verify_chain(chain)]
        for problem in problems:
            self.stderr.write(problem)
        if problems:
            raise CommandError(f"{len(problems)} problem(s) in the audit trail.")
        self.stdout.write(f"{len(chains)} chain(s) checked: every row is in place and unchanged.")
