"""English left on a Spanish page: our own English texts whose Spanish differs, Meta's raw values,
and the commonest English words.

The catalogue (`locale/es/LC_MESSAGES/django.po`, read with Babel) gives every English text the
project can render; a piece of one found in a Spanish page was not translated there. Pieces that
a Spanish text uses too ("WhatsApp", "PIN", "Meta") are left out.
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

from babel.messages.pofile import read_po

PO = Path(__file__).resolve().parents[2] / "locale" / "es" / "LC_MESSAGES" / "django.po"
# Placeholders and markup cut an English text into the pieces a page shows verbatim.
CUT = re.compile(r"%\(\w+\)[sdif]|%[sdif]|\{[^}]*\}|<[^>]+>")
TRIM = " .,:;!?()[]«»“”\"'…-—·/"
META_RAW = re.compile(
    r"\b(GREEN|YELLOW|RED|UNKNOWN|TIER_\w+|APPROVED|PENDING_REVIEW|DECLINED|CONNECTED|PENDING|"
    r"DISCONNECTED|NOT_VERIFIED|VERIFIED|CLOUD_API)\b"
)
COMMON_ENGLISH = re.compile(
    r"\b(the|The|and|your|Your|this|This|with|from|is|are|was|not|yet|to|of|for|you|please|Please|"
    r"click|here|now|Now|number|code|Save|Check|Send|Connected|Active|Waiting)\b"
)

NOT_WORDS = re.compile(r"\S+@\S+|https?://\S+|\bEnglish\b")


@cache
def _english_pieces() -> tuple[frozenset[str], frozenset[str]]:
    """(phrases, single words) of our English texts that no Spanish text of the catalogue uses."""
    with PO.open("rb") as po:
        catalog = read_po(po, locale="es")
    pairs: list[tuple[list[str], list[str]]] = []
    for message in catalog:
        if not message.id:
            continue  # the header
        english = list(message.id) if isinstance(message.id, tuple | list) else [message.id]
        spanish = list(message.string) if isinstance(message.string, tuple | list) else [message.string]
        pairs.append((english, [text for text in spanish if text]))
    spanish_text = "\n".join(text for _english, spanish in pairs for text in spanish)
    phrases: set[str] = set()
    words: set[str] = set()
    for english, spanish in pairs:
        for text in english:
            if text in spanish:
                continue  # the same in both languages
            for piece in CUT.split(text):
                piece = " ".join(piece.split()).strip(TRIM)
                if " " in piece:
                    if piece not in spanish_text:
                        phrases.add(piece)
                elif (
                    len(piece) >= 4
                    and piece.isalpha()
                    and not re.search(rf"\b{re.escape(piece)}\b", spanish_text)
                ):
                    words.add(piece)
    return frozenset(phrases), frozenset(words)


def english_in(text: str) -> list[str]:
    """The English found in a Spanish page's visible text, each with the words around it (empty
    when there is none)."""
    phrases, words = _english_pieces()
    # Addresses are no words, and a language is named in its own language in the picker.
    text = NOT_WORDS.sub(" ", text)
    spans = [
        (match.start(), match.end()) for phrase in phrases for match in re.finditer(re.escape(phrase), text)
    ]
    spans += [
        (match.start(), match.end())
        for match in re.finditer(r"\b[^\W\d_]{4,}\b", text)
        if match.group(0) in words
    ]
    spans += [
        (match.start(), match.end())
        for pattern in (META_RAW, COMMON_ENGLISH)
        for match in pattern.finditer(text)
    ]
    return [
        f"{text[start:end]!r} in …{' '.join(text[max(0, start - 40) : end + 40].split())}…"
        for start, end in sorted(spans)
    ]
