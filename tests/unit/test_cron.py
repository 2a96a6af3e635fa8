"""stepflow.cron: parsing, the next tick (in a time zone, across DST), and every error."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from stepflow.cron import MACROS, CronExpression, get_timezone, timezone_names
from stepflow.errors import CronError, StepflowError

BERLIN = ZoneInfo("Europe/Berlin")


def ticks(expr: str, after: datetime, tz: str | ZoneInfo = "UTC", count: int = 4) -> list[str]:
    """The next ticks as ISO strings: exact, with the offset they fire at."""
    return [t.isoformat() for t in CronExpression.parse(expr).ticks(after, tz, count)]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


# -- parsing -----------------------------------------------------------------------------
def test_parse__fields_become_sorted_value_sets() -> None:
    expr = CronExpression.parse("  1-10/3,59  */6 1,15 jan-MAR,dec  mon-fri ")
    assert expr.text == "1-10/3,59 */6 1,15 jan-MAR,dec mon-fri"
    assert str(expr) == expr.text
    assert expr.minutes == (1, 4, 7, 10, 59)
    assert expr.hours == (0, 6, 12, 18)
    assert expr.days == (1, 15)
    assert expr.months == (1, 2, 3, 12)
    assert expr.weekdays == (1, 2, 3, 4, 5)
    assert (expr.any_day, expr.any_weekday) == (False, False)


def test_parse__star_covers_the_whole_range() -> None:
    expr = CronExpression.parse("* * * * *")
    assert expr.minutes == tuple(range(60))
    assert expr.hours == tuple(range(24))
    assert expr.days == tuple(range(1, 32))
    assert expr.months == tuple(range(1, 13))
    assert expr.weekdays == tuple(range(7))
    assert (expr.any_day, expr.any_weekday) == (True, True)


def test_parse__start_and_step_runs_to_the_end_of_the_field() -> None:
    expr = CronExpression.parse("50/3 22/1 28/2 11/1 5/1")
    assert expr.minutes == (50, 53, 56, 59)
    assert expr.hours == (22, 23)
    assert expr.days == (28, 30)
    assert expr.months == (11, 12)
    assert expr.weekdays == (5, 6)


@pytest.mark.parametrize("sunday", ["0", "7", "sun", "SUN", "0,7"])
def test_parse__zero_and_seven_are_both_sunday(sunday: str) -> None:
    assert CronExpression.parse(f"0 0 * * {sunday}").weekdays == (0,)


def test_parse__a_range_ending_on_sunday_wraps_forward() -> None:
    assert CronExpression.parse("0 0 * * fri-sun").weekdays == (0, 5, 6)
    assert CronExpression.parse("0 0 * * 5-7").weekdays == (0, 5, 6)
    assert CronExpression.parse("0 0 * * */2").weekdays == (0, 2, 4, 6)


@pytest.mark.parametrize(
    ("macro", "same_as"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_parse__macros(macro: str, same_as: str) -> None:
    expr, plain = CronExpression.parse(macro), CronExpression.parse(same_as)
    assert expr.text == macro
    fields = ("minutes", "hours", "days", "months", "weekdays", "any_day", "any_weekday")
    assert [getattr(expr, f) for f in fields] == [getattr(plain, f) for f in fields]
    assert MACROS[macro.lower()] == same_as


# -- every error message -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "",
            "A cron expression is required: 5 fields "
            "(minute hour day-of-month month day-of-week) or a macro such as @daily",
        ),
        (
            "   ",
            "A cron expression is required: 5 fields "
            "(minute hour day-of-month month day-of-week) or a macro such as @daily",
        ),
        (
            "* * * *",
            "A cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            "not 4: '* * * *'",
        ),
        (
            "0 0 * * * *",
            "A cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            "not 6: '0 0 * * * *'",
        ),
        (
            "@reboot",
            "Unknown cron macro '@reboot': use one of @hourly, @daily, @midnight, @weekly, "
            "@monthly, @yearly, @annually",
        ),
        ("61 * * * *", "minute field '61' is out of range 0-59"),
        ("0,61 * * * *", "minute field '61' is out of range 0-59"),
        ("50-61 * * * *", "minute field '50-61' is out of range 0-59"),
        ("* 24 * * *", "hour field '24' is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0' is out of range 1-31"),
        ("* * 32 * *", "day-of-month field '32' is out of range 1-31"),
        ("* * * 13 *", "month field '13' is out of range 1-12"),
        ("* * * 0 *", "month field '0' is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8' is out of range 0-7"),
        ("x * * * *", "minute field 'x' is not a number"),
        ("1-x * * * *", "minute field '1-x': 'x' is not a number"),
        ("* -1 * * *", "hour field '-1' is missing a value"),
        ("mon * * * *", "minute field 'mon' is not a number"),
        ("* * * foo *", "month field 'foo' is not a number or a month name (jan..dec)"),
        (
            "* * * jan-foo *",
            "month field 'jan-foo': 'foo' is not a number or a month name (jan..dec)",
        ),
        ("* * * * funday", "day-of-week field 'funday' is not a number or a day name (sun..sat)"),
        ("* * ? * *", "day-of-month field '?' is not a number"),
        (
            "*/0 * * * *",
            "minute field '*/0' has an invalid step '0': use a whole number of at least 1",
        ),
        (
            "*/x * * * *",
            "minute field '*/x' has an invalid step 'x': use a whole number of at least 1",
        ),
        (
            "1-5/ * * * *",
            "minute field '1-5/' has an invalid step '': use a whole number of at least 1",
        ),
        ("/5 * * * *", "minute field '/5' is missing a value"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty item"),
        ("1, * * * *", "minute field '1,' has an empty item"),
        ("30-10 * * * *", "minute field '30-10' is a range that starts after it ends"),
        (
            "0 22-2 * * *",
            "hour field '22-2' is a range that starts after it ends; "
            "write it as two ranges, e.g. 22-23,0-2",
        ),
        ("0 0 * dec-jan *", "month field 'dec-jan' is a range that starts after it ends"),
        (
            "0 0 30 2 *",
            "The cron expression '0 0 30 2 *' never fires: "
            "day-of-month '30' never falls in month '2'",
        ),
        (
            "0 0 31 apr,jun,sep,nov *",
            "The cron expression '0 0 31 apr,jun,sep,nov *' never fires: "
            "day-of-month '31' never falls in month 'apr,jun,sep,nov'",
        ),
    ],
)
def test_parse__errors_name_the_field(text: str, message: str) -> None:
    with pytest.raises(CronError) as exc:
        CronExpression.parse(text)
    assert exc.value.args == (message,)
    assert isinstance(exc.value, StepflowError)


def test_parse__feb_30_with_a_weekday_is_valid_by_the_or_rule() -> None:
    # Both day fields restricted: "the 30th of February, or any Monday in February".
    assert ticks("0 0 30 2 mon", utc(2027, 1, 1), count=2) == [
        "2027-02-01T00:00:00+00:00",
        "2027-02-08T00:00:00+00:00",
    ]


# -- next_after ------------------------------------------------------------------------------
def test_next_after__is_strictly_after() -> None:
    expr = CronExpression.parse("*/15 * * * *")
    assert expr.next_after(utc(2026, 11, 21, 10, 7, 30)) == utc(2026, 11, 21, 10, 15)
    assert expr.next_after(utc(2026, 11, 21, 10, 15)) == utc(2026, 11, 21, 10, 30)
    assert expr.next_after(utc(2026, 11, 21, 10, 14, 59, 999999)) == utc(2026, 11, 21, 10, 15)
    assert expr.next_after(utc(2026, 11, 21, 23, 50)) == utc(2026, 11, 22, 0, 0)


def test_next_after__lists_ranges_and_steps() -> None:
    assert ticks("10-20/5,59 3 * * *", utc(2026, 5, 1), count=5) == [
        "2026-05-01T03:10:00+00:00",
        "2026-05-01T03:15:00+00:00",
        "2026-05-01T03:20:00+00:00",
        "2026-05-01T03:59:00+00:00",
        "2026-05-02T03:10:00+00:00",
    ]


def test_next_after__month_and_day_names() -> None:
    assert ticks("0 0 1 JAN,jul *", utc(2026, 5, 1), count=3) == [
        "2026-07-01T00:00:00+00:00",
        "2027-01-01T00:00:00+00:00",
        "2027-07-01T00:00:00+00:00",
    ]
    # Friday 2026-11-20, 10:00: the next weekday morning is Monday.
    assert ticks("0 9 * * mon-fri", utc(2026, 11, 20, 10), count=2) == [
        "2026-11-23T09:00:00+00:00",
        "2026-11-24T09:00:00+00:00",
    ]
    assert ticks("0 0 * * fri-sun", utc(2026, 11, 16), count=4) == [
        "2026-11-20T00:00:00+00:00",
        "2026-11-21T00:00:00+00:00",
        "2026-11-22T00:00:00+00:00",
        "2026-11-27T00:00:00+00:00",
    ]


def test_next_after__day_of_month_or_day_of_week_when_both_are_restricted() -> None:
    # Every 13th and every Friday (Friday the 13th once); 2026-12-13 is a Sunday.
    assert ticks("0 0 13 * fri", utc(2026, 11, 1), count=8) == [
        "2026-11-06T00:00:00+00:00",
        "2026-11-13T00:00:00+00:00",
        "2026-11-20T00:00:00+00:00",
        "2026-11-27T00:00:00+00:00",
        "2026-12-04T00:00:00+00:00",
        "2026-12-11T00:00:00+00:00",
        "2026-12-13T00:00:00+00:00",
        "2026-12-18T00:00:00+00:00",
    ]


def test_next_after__a_day_field_starting_with_star_means_both_must_match() -> None:
    # "*/10" counts as unrestricted (as in cron): days 1, 11, 21, 31 that are Mondays.
    assert ticks("0 0 */10 * mon", utc(2026, 1, 1), count=4) == [
        "2026-05-11T00:00:00+00:00",
        "2026-06-01T00:00:00+00:00",
        "2026-08-31T00:00:00+00:00",
        "2026-09-21T00:00:00+00:00",
    ]


def test_next_after__february_29() -> None:
    assert ticks("0 12 29 2 *", utc(2026, 1, 1), count=3) == [
        "2028-02-29T12:00:00+00:00",
        "2032-02-29T12:00:00+00:00",
        "2036-02-29T12:00:00+00:00",
    ]
    # 2100 is not a leap year: eight years between two Feb 29ths.
    assert ticks("0 0 29 2 *", utc(2096, 3, 1), count=1) == ["2104-02-29T00:00:00+00:00"]
    # Days a month does not have are skipped, not moved.
    assert ticks("0 0 29,30,31 * *", utc(2027, 1, 30), count=4) == [
        "2027-01-31T00:00:00+00:00",
        "2027-03-29T00:00:00+00:00",
        "2027-03-30T00:00:00+00:00",
        "2027-03-31T00:00:00+00:00",
    ]


def test_next_after__the_tick_is_in_the_time_zone_given() -> None:
    # 12:00 UTC is 07:00 in New York: 09:00 there is still to come that day.
    nine = CronExpression.parse("0 9 * * *")
    tick = nine.next_after(utc(2026, 11, 21, 12), "America/New_York")
    assert tick.isoformat() == "2026-11-21T09:00:00-05:00"
    assert tick.tzinfo == ZoneInfo("America/New_York")
    assert tick == utc(2026, 11, 21, 14)
    assert nine.next_after(utc(2026, 11, 21, 14)).isoformat() == "2026-11-22T09:00:00+00:00"
    # A moment given in another zone is the same instant.
    tokyo = datetime(2026, 11, 22, 1, 0, tzinfo=ZoneInfo("Asia/Tokyo"))  # 2026-11-21 16:00 UTC
    assert CronExpression.parse("0 17 * * *").next_after(tokyo) == utc(2026, 11, 21, 17)


def test_next_after__needs_an_aware_datetime() -> None:
    with pytest.raises(ValueError, match="next_after needs an aware datetime"):
        CronExpression.parse("* * * * *").next_after(datetime(2026, 1, 1))


# -- daylight saving time in Europe/Berlin (2026: +01 -> +02 on 29 March at 02:00,
#    +02 -> +01 on 25 October at 03:00) -----------------------------------------------------
def test_dst_spring__a_skipped_local_time_does_not_fire() -> None:
    assert ticks("30 2 * * *", datetime(2026, 3, 27, 12, tzinfo=BERLIN), BERLIN, 3) == [
        "2026-03-28T02:30:00+01:00",
        "2026-03-30T02:30:00+02:00",  # 29 March has no 02:30
        "2026-03-31T02:30:00+02:00",
    ]


def test_dst_spring__hourly_and_half_hourly_skip_the_missing_hour() -> None:
    assert ticks("0 * * * *", datetime(2026, 3, 29, 0, 30, tzinfo=BERLIN), BERLIN, 3) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T04:00:00+02:00",
    ]
    assert ticks("*/30 * * * *", datetime(2026, 3, 29, 0, 45, tzinfo=BERLIN), BERLIN, 4) == [
        "2026-03-29T01:00:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:30:00+02:00",
    ]


def test_dst_autumn__a_repeated_local_time_fires_once_at_its_first_occurrence() -> None:
    assert ticks("30 2 * * *", datetime(2026, 10, 24, 12, tzinfo=BERLIN), BERLIN, 3) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]
    assert ticks("0 * * * *", datetime(2026, 10, 25, 0, 30, tzinfo=BERLIN), BERLIN, 4) == [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",  # 02:00+01:00 is the same wall time again: not fired
        "2026-10-25T04:00:00+01:00",
    ]


def test_dst_autumn__from_inside_the_repeated_hour() -> None:
    second_pass = datetime(2026, 10, 25, 1, 10, tzinfo=UTC)  # 02:10+01:00, the second 02:10
    assert second_pass.astimezone(BERLIN).isoformat() == "2026-10-25T02:10:00+01:00"
    assert ticks("*/15 * * * *", second_pass, BERLIN, 2) == [
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:15:00+01:00",
    ]
    assert ticks("30 2 * * *", second_pass, BERLIN, 1) == ["2026-10-26T02:30:00+01:00"]
    first_pass = datetime(2026, 10, 25, 0, 10, tzinfo=UTC)  # 02:10+02:00
    assert ticks("*/15 * * * *", first_pass, BERLIN, 4) == [
        "2026-10-25T02:15:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:45:00+02:00",
        "2026-10-25T03:00:00+01:00",
    ]


def test_dst__a_year_of_daily_ticks_is_24_hours_apart_but_twice() -> None:
    daily = CronExpression.parse("0 12 * * *").ticks(utc(2026, 1, 1), BERLIN, 365)
    assert {t.astimezone(BERLIN).hour for t in daily} == {12}
    instants = [t.astimezone(UTC) for t in daily]
    gaps = [b - a for a, b in itertools.pairwise(instants)]
    assert gaps.count(timedelta(hours=24)) == 362
    assert gaps.count(timedelta(hours=23)) == 1  # spring
    assert gaps.count(timedelta(hours=25)) == 1  # autumn


# -- time zones --------------------------------------------------------------------------------
def test_get_timezone() -> None:
    assert get_timezone("Europe/Berlin") == BERLIN
    assert get_timezone(" UTC ") == ZoneInfo("UTC")
    assert "Europe/Berlin" in timezone_names()
    assert "localtime" not in timezone_names()


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "A time zone is required: an IANA name such as UTC or Europe/Berlin"),
        (
            "Mars/Olympus",
            "Unknown time zone 'Mars/Olympus': use an IANA name such as UTC or Europe/Berlin",
        ),
        ("utc", "Unknown time zone 'utc': use an IANA name such as UTC or Europe/Berlin"),
        ("Europe", "Unknown time zone 'Europe': use an IANA name such as UTC or Europe/Berlin"),
        (
            "../etc/passwd",
            "Unknown time zone '../etc/passwd': use an IANA name such as UTC or Europe/Berlin",
        ),
        (
            "localtime",
            "Unknown time zone 'localtime': use an IANA name such as UTC or Europe/Berlin",
        ),
    ],
)
def test_get_timezone__errors(name: str, message: str) -> None:
    with pytest.raises(CronError) as exc:
        get_timezone(name)
    assert exc.value.args == (message,)


def test_next_after__an_unknown_zone_name_is_a_cron_error() -> None:
    with pytest.raises(CronError, match="Unknown time zone 'Nowhere'"):
        CronExpression.parse("* * * * *").next_after(utc(2026, 1, 1), "Nowhere")


def test_matches() -> None:
    expr = CronExpression.parse("30 2 13 * fri")
    assert expr.matches(datetime(2026, 11, 13, 2, 30))
    assert expr.matches(datetime(2026, 11, 20, 2, 30))  # a Friday
    assert not expr.matches(datetime(2026, 11, 21, 2, 30))
    assert not expr.matches(datetime(2026, 11, 13, 2, 31))
