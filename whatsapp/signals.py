"""Signals the WhatsApp services send, for the parts that react without being called directly."""

from __future__ import annotations

from django.dispatch import Signal

# Sent with `account=` when a new access token was saved (in the saving transaction).
access_token_saved = Signal()
