"""The lists behind the pickers of the settings page and admin (the server still validates every value).

Every name comes from Babel's copy of the Unicode CLDR, in the reader's language: currencies,
countries, and time zones by country and city. The lists are what a clinic can choose today:
currencies legal tender somewhere now (no gold, test codes, funds or withdrawn codes), and the
IANA zones CLDR ties to a country under their canonical name (no aliases such as
`America/Buenos_Aires` or `US/Eastern`, no `Etc/GMT+6`).
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from datetime import date
from functools import lru_cache

import pycountry
from babel import Locale, UnknownLocaleError
from babel.core import get_global
from babel.numbers import get_currency_name, get_territory_currencies
from django.utils import translation
from django.utils.translation import gettext as _

Choices = list[tuple[str, str]]
ChoiceGroups = list[tuple[str, Choices]]


def _locale() -> Locale:
    """The reader's language as Babel knows it (`es`, `en`), English if Babel lacks it."""
    try:
        return Locale.parse(translation.to_locale(translation.get_language() or "en"))
    except (UnknownLocaleError, ValueError):
        return Locale.parse("en")


def _sort_key(text: str) -> str:
    # "Ámsterdam" sorts with the A's, as a reader expects.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(char for char in decomposed if not unicodedata.combining(char)).casefold()


# --- countries -----------------------------------------------------------------------------


def country_code(country: str) -> str | None:
    """The ISO 3166 code of a stored country (`El Salvador`, `SV`, `SLV`), None if unknown."""
    try:
        return str(pycountry.countries.lookup(country).alpha_2) if country else None
    except LookupError:
        return None


def _country_name(code: str, locale: Locale) -> str:
    country = pycountry.countries.get(alpha_2=code)
    return str(locale.territories.get(code) or (country.name if country else code))


def country_label(country: str) -> str:
    """A stored country in the reader's language (`El Salvador`, `Estados Unidos`), as stored if unknown."""
    code = country_code(country)
    return _country_name(code, _locale()) if code else country or _("Not set")


def country_choices(current: str = "") -> Choices:
    """Every country, named in the reader's language; the value stored is ISO 3166's English name.

    The stored value stays the one the rest of the product reads (`El Salvador`); a
    stored value outside the list is kept as the first choice, so saving changes nothing.
    """
    locale = _locale()
    options = sorted(
        ((str(country.name), _country_name(str(country.alpha_2), locale)) for country in pycountry.countries),
        key=lambda option: _sort_key(option[1]),
    )
    if current and current not in {value for value, _label in options}:
        options.insert(0, (current, current))
    return [("", "—"), *options]


# --- currencies ----------------------------------------------------------------------------


def current_currencies(today: date | None = None) -> frozenset[str]:
    """ISO 4217 codes that are legal tender in some country today (CLDR), and ISO still lists."""
    today = today or date.today()
    codes: set[str] = set()
    for territory in get_global("territory_currencies"):
        codes.update(get_territory_currencies(territory, start_date=today, tender=True, non_tender=False))
    return frozenset(code for code in codes if pycountry.currencies.get(alpha_3=code) is not None)


@lru_cache(maxsize=8)
def _currency_options(language: str, today: date) -> Choices:
    options = [
        (code, f"{get_currency_name(code, locale=language)} ({code})") for code in current_currencies(today)
    ]
    return sorted(options, key=lambda option: _sort_key(option[1]))


def currency_choices(country: str = "", current: str = "") -> ChoiceGroups:
    """Current currencies named in the reader's language; the clinic's country's first."""
    locale = _locale()
    options = _currency_options(str(locale), date.today())
    code = country_code(country)
    own_codes = get_territory_currencies(code, start_date=date.today(), tender=True) if code else []
    own = [option for option in options if option[0] in own_codes]
    groups: ChoiceGroups = []
    if current and current not in {value for value, _label in options}:
        groups.append((_("Current"), [(current, currency_display(current))]))
    if own:
        groups.append((_country_name(code or "", locale), own))
    groups.append((_("All currencies"), options))
    return groups


# --- time zones ----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zones_by_country() -> dict[str, list[str]]:
    """Canonical IANA zones by ISO 3166 country, as CLDR ties them, that this machine's tz database has."""
    aliases = get_global("zone_aliases")
    available = zoneinfo.available_timezones()
    by_country: dict[str, list[str]] = {}
    for zone, territory in get_global("zone_territories").items():
        # "001" is the world (Etc/UTC), "ZZ" unknown: no country to put them under.
        if zone in aliases or zone not in available or not re.fullmatch(r"[A-Z]{2}", territory):
            continue
        if territory == "ZZ" or pycountry.countries.get(alpha_2=territory) is None:
            continue
        by_country.setdefault(territory, []).append(zone)
    return by_country


@lru_cache(maxsize=1)
def _cldr_ids() -> dict[str, list[str]]:
    """Each canonical zone's ids in CLDR's data: its own name and the older names CLDR still keys by."""
    ids: dict[str, list[str]] = {}
    for old, canonical in get_global("zone_aliases").items():
        ids.setdefault(canonical, [canonical]).append(old)
    return ids


def timezone_label(zone: str, locale: Locale | None = None) -> str:
    """`Los Ángeles · hora del Pacífico`: the city, and the zone's everyday name where CLDR has one."""
    locale = locale or _locale()
    meta_zones = get_global("meta_zones")
    city = generic = None
    for cldr_id in _cldr_ids().get(zone, [zone]):
        city = city or locale.time_zones.get(cldr_id, {}).get("city")
        metazone = meta_zones.get(cldr_id)
        if metazone and not generic:
            names = locale.meta_zones.get(metazone, {}).get("long", {})
            generic = names.get("generic") or names.get("standard")
    city = city or zone.rsplit("/", 1)[-1].replace("_", " ")
    return f"{city} · {generic}" if generic else str(city)


@lru_cache(maxsize=8)
def _timezone_groups(language: str) -> tuple[tuple[str, str, Choices], ...]:
    locale = Locale.parse(language)
    groups = []
    for code, zones in _zones_by_country().items():
        options = sorted(
            ((zone, timezone_label(zone, locale)) for zone in zones), key=lambda o: _sort_key(o[1])
        )
        groups.append((code, _country_name(code, locale), options))
    return tuple(sorted(groups, key=lambda group: _sort_key(group[1])))


def timezone_choices(country: str, current: str = "") -> ChoiceGroups:
    """Time zones grouped by country in the reader's language, the clinic's country first.

    A stored zone outside the list (an alias saved before) stays the first choice, so
    saving the form without touching it changes nothing.
    """
    code = country_code(country)
    groups = _timezone_groups(str(_locale()))
    listed = {zone for _code, _name, options in groups for zone, _label in options}
    ordered: ChoiceGroups = []
    if current and current not in listed:
        ordered.append((_("Current"), [(current, current)]))
    ordered += [(name, list(options)) for group_code, name, options in groups if group_code == code]
    ordered += [(name, list(options)) for group_code, name, options in groups if group_code != code]
    return ordered


def timezone_display(zone: str) -> str:
    """A stored zone as the reader knows it: `El Salvador · hora central (America/El_Salvador)`."""
    return f"{timezone_label(zone)} ({zone})" if zone else "—"


def currency_display(code: str) -> str:
    """A stored currency as the reader knows it: `dólar estadounidense (USD)`."""
    return f"{get_currency_name(code, locale=_locale())} ({code})" if code else "—"
