"""Cron expressions: the five classic fields and the @-macros, evaluated in a time zone.

``CronExpression.parse("30 2 * * mon-fri")`` then ``expr.next_after(now, "Europe/Berlin")``.
Fields: minute hour day-of-month month day-of-week, each ``*``, ``*/n``, ``a``, ``a-b``,
``a-b/n``, ``a/n`` (from a to the end, every n) or a comma list of those; months may be
``jan``..``dec`` and days ``sun``..``sat`` (0 and 7 are both Sunday). As in Vixie cron and
cronie, when day-of-month and day-of-week are both restricted (neither starts with ``*``) a
day matches if *either* matches; otherwise both must.

Ticks are wall-clock times in the time zone. Across a daylight saving change a local time
that does not exist (the hour skipped in spring) does not fire, and one that happens twice
(the hour repeated in autumn) fires once, at its first occurrence.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from .errors import CronError

#: The macros and the expressions they stand for.
MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

MONTH_NAMES = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
DAY_NAMES = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}

#: Days in each month at most (February in a leap year), to refuse dates that never occur.
_MONTH_DAYS = dict(enumerate([31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], start=1))
#: How far ahead a tick is looked for: every valid expression fires within 8 years (Feb 29).
_SEARCH_YEARS = 9
_DIGITS = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    names: dict[str, int] = field(default_factory=dict)
    hint: str = ""


_FIELDS = (
    _Field("minute", 0, 59),
    _Field("hour", 0, 23),
    _Field("day-of-month", 1, 31),
    _Field("month", 1, 12, MONTH_NAMES, " or a month name (jan..dec)"),
    # 7 is Sunday too; ``*`` means 0-6.
    _Field("day-of-week", 0, 7, DAY_NAMES, " or a day name (sun..sat)"),
)


@functools.cache
def _zone_names() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones() - {"localtime"})


def get_timezone(name: str) -> ZoneInfo:
    """The time zone of an IANA name (``UTC``, ``Europe/Berlin``), or CronError."""
    key = (name or "").strip()
    if not key:
        raise CronError("A time zone is required: an IANA name such as UTC or Europe/Berlin")
    if key not in _zone_names():
        raise CronError(f"Unknown time zone {key!r}: use an IANA name such as UTC or Europe/Berlin")
    return ZoneInfo(key)


def timezone_names() -> list[str]:
    """Every time zone name :func:`get_timezone` accepts, sorted."""
    return sorted(_zone_names())


@dataclass(frozen=True)
class CronExpression:
    """A parsed cron expression; ``text`` is the expression as written (whitespace collapsed)."""

    text: str
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday .. 6 = Saturday
    any_day: bool  # the day-of-month field starts with "*"
    any_weekday: bool  # the day-of-week field starts with "*"

    def __str__(self) -> str:
        return self.text

    @classmethod
    def parse(cls, text: str) -> CronExpression:
        """Parse ``text`` or raise CronError naming the field that is wrong."""
        written = " ".join(str(text or "").split())
        if not written:
            raise CronError(
                "A cron expression is required: 5 fields "
                "(minute hour day-of-month month day-of-week) or a macro such as @daily"
            )
        expanded = written
        if written.startswith("@"):
            macro = MACROS.get(written.lower())
            if macro is None:
                raise CronError(f"Unknown cron macro {written!r}: use one of {', '.join(MACROS)}")
            expanded = macro
        parts = expanded.split(" ")
        if len(parts) != len(_FIELDS):
            raise CronError(
                f"A cron expression has 5 fields (minute hour day-of-month month day-of-week), "
                f"not {len(parts)}: {written!r}"
            )
        values = [_parse_field(part, spec) for part, spec in zip(parts, _FIELDS, strict=True)]
        expr = cls(
            text=written,
            minutes=values[0],
            hours=values[1],
            days=values[2],
            months=values[3],
            weekdays=values[4],
            any_day=parts[2].startswith("*"),
            any_weekday=parts[4].startswith("*"),
        )
        if expr.any_weekday and not any(
            d <= _MONTH_DAYS[m] for m in expr.months for d in expr.days
        ):
            raise CronError(
                f"The cron expression {written!r} never fires: "
                f"day-of-month {parts[2]!r} never falls in month {parts[3]!r}"
            )
        return expr

    # -- matching -------------------------------------------------------------------------
    def day_matches(self, day: date) -> bool:
        by_date = day.day in self.days
        by_weekday = (day.weekday() + 1) % 7 in self.weekdays
        if self.any_day or self.any_weekday:
            return by_date and by_weekday
        return by_date or by_weekday

    def matches(self, wall: datetime) -> bool:
        """Whether a wall-clock time (its zone ignored) is a tick."""
        return (
            wall.minute in self.minutes
            and wall.hour in self.hours
            and wall.month in self.months
            and self.day_matches(wall.date())
        )

    def _next_wall(self, start: datetime) -> datetime:
        """The first matching naive wall-clock minute at or after ``start``."""
        t = start.replace(second=0, microsecond=0)
        limit = start.year + _SEARCH_YEARS
        while t.year <= limit:
            if t.month not in self.months:
                month = next((m for m in self.months if m > t.month), None)
                t = datetime(t.year + (month is None), month or self.months[0], 1)
                continue
            if not self.day_matches(t.date()):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                hour = next((h for h in self.hours if h > t.hour), None)
                if hour is None:
                    t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                else:
                    t = t.replace(hour=hour, minute=0)
                continue
            if t.minute not in self.minutes:
                minute = next((m for m in self.minutes if m > t.minute), None)
                if minute is None:
                    t = t.replace(minute=0) + timedelta(hours=1)
                else:
                    t = t.replace(minute=minute)
                continue
            return t
        raise CronError(f"The cron expression {self.text!r} has no tick before {limit + 1}")

    def next_after(self, moment: datetime, tz: ZoneInfo | str = "UTC") -> datetime:
        """The first tick strictly after the aware datetime ``moment``, as an aware
        datetime in ``tz``. Skipped local times do not fire; repeated ones fire once."""
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError("next_after needs an aware datetime")
        zone = get_timezone(tz) if isinstance(tz, str) else tz
        local = moment.astimezone(zone).replace(tzinfo=None)
        wall = local.replace(second=0, microsecond=0) + timedelta(minutes=1)
        while True:
            candidate = self._next_wall(wall)
            tick = candidate.replace(tzinfo=zone)  # fold=0: the first of a repeated time
            if _exists(tick) and tick > moment:
                return tick
            wall = candidate + timedelta(minutes=1)

    def ticks(self, after: datetime, tz: ZoneInfo | str = "UTC", count: int = 5) -> list[datetime]:
        """The next ``count`` ticks after ``after``."""
        zone = get_timezone(tz) if isinstance(tz, str) else tz
        found: list[datetime] = []
        moment = after
        for _ in range(count):
            moment = self.next_after(moment, zone)
            found.append(moment)
        return found


def _exists(tick: datetime) -> bool:
    """False for a wall-clock time skipped by a daylight saving change."""
    assert tick.tzinfo is not None
    back = tick.astimezone(UTC).astimezone(tick.tzinfo)
    return back.replace(tzinfo=None) == tick.replace(tzinfo=None)


def _parse_field(text: str, spec: _Field) -> tuple[int, ...]:
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{spec.name} field {text!r} has an empty item")
        values |= _parse_item(item, spec)
    if spec.name == "day-of-week" and 7 in values:
        values = (values - {7}) | {0}
    return tuple(sorted(values))


def _parse_item(item: str, spec: _Field) -> set[int]:
    base, slash, step_text = item.partition("/")
    step = 1
    if slash:
        if not _DIGITS.fullmatch(step_text) or int(step_text) < 1:
            raise CronError(
                f"{spec.name} field {item!r} has an invalid step {step_text!r}: "
                "use a whole number of at least 1"
            )
        step = int(step_text)
    # For day-of-week, "*" and "a/n" run to Saturday (6): Sunday is already 0.
    top = 6 if spec.names is DAY_NAMES else spec.hi
    if base == "*":
        lo, hi = spec.lo, top
    elif "-" in base:
        first, _, last = base.partition("-")
        lo = _value(first, item, spec)
        # "fri-sun": Sunday closing a range is 7, so the range runs forwards.
        hi = 7 if spec.names is DAY_NAMES and last.lower() == "sun" else _value(last, item, spec)
        if lo > hi:
            raise CronError(
                f"{spec.name} field {item!r} is a range that starts after it ends"
                + ("; write it as two ranges, e.g. 22-23,0-2" if spec.name == "hour" else "")
            )
    else:
        lo = _value(base, item, spec)
        hi = top if slash else lo
    return set(range(lo, hi + 1, step))


def _value(token: str, item: str, spec: _Field) -> int:
    word = token.lower()
    if word in spec.names:
        return spec.names[word]
    if not _DIGITS.fullmatch(token):
        where = f"{spec.name} field {item!r}"
        if token != item:
            where += f": {token!r}"
        if not token:
            raise CronError(f"{spec.name} field {item!r} is missing a value")
        raise CronError(f"{where} is not a number{spec.hint}")
    value = int(token)
    if not spec.lo <= value <= spec.hi:
        raise CronError(f"{spec.name} field {item!r} is out of range {spec.lo}-{spec.hi}")
    return value
