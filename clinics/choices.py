"""The lists behind the settings page's pickers (the server still validates every value)."""

from __future__ import annotations

import zoneinfo
from functools import lru_cache

import pycountry
from babel.core import get_global
from django.utils.translation import gettext as _

ChoiceGroups = list[tuple[str, list[tuple[str, str]]]]


def _label(zone: str) -> str:
    return zone.split("/", 1)[-1].replace("_", " ").replace("/", " / ")


@lru_cache(maxsize=1)
def _zones_by_region() -> dict[str, list[str]]:
    regions: dict[str, list[str]] = {}
    for zone in sorted(zoneinfo.available_timezones()):
        region, _sep, rest = zone.partition("/")
        # Only the canonical "Region/City" names: no "Etc/GMT+6", "US/Eastern" or bare aliases.
        if rest and region in {
            "Africa",
            "America",
            "Antarctica",
            "Asia",
            "Atlantic",
            "Australia",
            "Europe",
            "Indian",
            "Pacific",
        }:
            regions.setdefault(region, []).append(zone)
    return regions


def _country_code(country: str) -> str | None:
    try:
        return str(pycountry.countries.lookup(country).alpha_2) if country else None
    except LookupError:
        return None


def timezone_choices(country: str) -> ChoiceGroups:
    """Time zones grouped by region, the clinic's country first (`El Salvador` -> America/El_Salvador)."""
    groups: ChoiceGroups = []
    code = _country_code(country)
    territory_zones = get_global("territory_zones")
    own = [zone for zone in territory_zones.get(code or "", []) if zone in zoneinfo.available_timezones()]
    if own:
        groups.append((country, [(zone, _label(zone)) for zone in own]))
    for region, zones in _zones_by_region().items():
        groups.append((region, [(zone, _label(zone)) for zone in zones]))
    return groups


def currency_choices() -> list[tuple[str, str]]:
    return [
        (currency.alpha_3, f"{currency.alpha_3} · {currency.name}")
        for currency in sorted(pycountry.currencies, key=lambda currency: currency.alpha_3)
    ]


def country_label(country: str) -> str:
    return country or _("Not set")
