"""Holiday calendars: the public holidays of a country or subdivision, plus a company's own days off.

`holidays US-CA` in a `calendar` block names a region by its ISO 3166 codes;
its dates come from the `holidays` package for any year, computed when
asked, so a calendar never runs out the way a typed list of dates does.
The checker asks `region_problem` about each code; business days are
counted with `DaysOff` where instants are computed (workflows/schedule.py,
run by activities), never inside a workflow: a replay must not depend on
the package's version.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

from dsl.suggest import closest


class UnknownRegion(ValueError):
    """A holiday region the `holidays` package does not know."""


def region_code(country: str, subdivision: str | None) -> str:
    """`US`, or `US-CA` with a subdivision (the form plans carry)."""
    return f"{country}-{subdivision}" if subdivision else country


def split_region(code: str) -> tuple[str, str | None]:
    country, _, subdivision = code.partition("-")
    return country, subdivision or None


class RegionProblem(NamedTuple):
    message: str
    wrong: str  # the code written that is wrong: the country or the subdivision
    suggestion: str | None  # a known code for it


def region_problem(country: str, subdivision: str | None) -> RegionProblem | None:
    """Why (`country`, `subdivision`) is no region the package knows; None if it is one."""
    supported = _supported()
    if country not in supported:
        return RegionProblem(f"unknown holiday country '{country}'", country,
                             _suggest(country, supported, _country_names()))
    if subdivision is not None and subdivision not in supported[country]:
        known = supported[country]
        listed = ", ".join(known[:12]) + (", …" if len(known) > 12 else "")
        what = f"{country} has no subdivisions" if not known else f"{country}'s subdivisions: {listed}"
        return RegionProblem(f"unknown subdivision '{subdivision}' of {country} ({what})", subdivision,
                             _suggest(subdivision, known, _subdivision_names(country)))
    return None


@lru_cache(maxsize=None)
def public_holidays(code: str, year: int) -> Mapping[dt.date, str]:
    """The public holidays (observed days included) of region `code` in `year`: date -> name."""
    import holidays

    country, subdivision = split_region(code)
    if (problem := region_problem(country, subdivision)) is not None:
        raise UnknownRegion(problem.message)
    found = holidays.country_holidays(country, subdiv=subdivision, years=year, language="en_US")
    return MappingProxyType({day: found[day] for day in sorted(found) if day.year == year})


class DaysOff:
    """Days with no business: a calendar's own dates, and its regions' public holidays in any year.

    A container (`day in days_off`); the package is asked per region and
    year, once (`public_holidays` caches). Unknown regions fail here, when
    built, not at the first date asked.
    """

    __slots__ = ("dates", "regions")

    def __init__(self, dates: Iterable[dt.date] = (), regions: Iterable[str] = ()) -> None:
        self.dates = frozenset(dates)
        self.regions = tuple(regions)
        for code in self.regions:
            if (problem := region_problem(*split_region(code))) is not None:
                raise UnknownRegion(problem.message)

    def __contains__(self, day: object) -> bool:
        if day in self.dates:
            return True
        return isinstance(day, dt.date) and any(day in public_holidays(r, day.year) for r in self.regions)

    def name(self, day: dt.date) -> str | None:
        """The holiday's name on `day` (None for the calendar's own dates and for business days)."""
        for code in self.regions:
            if (name := public_holidays(code, day.year).get(day)) is not None:
                return name
        return None


@lru_cache(maxsize=1)
def _supported() -> dict[str, list[str]]:
    import holidays

    return {code: list(subs) for code, subs in holidays.list_supported_countries().items()}


@lru_cache(maxsize=1)
def _country_names() -> dict[str, str]:
    """Country name, lower case without spaces -> code: `Germany` suggests `DE`."""
    from holidays.registry import COUNTRIES

    return {entry[0].lower(): entry[1] for entry in COUNTRIES.values()}


def _subdivision_names(country: str) -> dict[str, str]:
    """Subdivision name, lower case without spaces -> code: `Bayern` suggests `BY`."""
    import holidays

    aliases: dict[str, Any] = getattr(holidays.country_holidays(country), "subdivisions_aliases", {}) or {}
    return {name.lower().replace(" ", ""): code for name, code in aliases.items()}


def _suggest(written: str, codes: Iterable[str], names: Mapping[str, str]) -> str | None:
    return names.get(written.lower().replace("_", "")) or closest(written, codes)
