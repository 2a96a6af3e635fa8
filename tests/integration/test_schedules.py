"""Schedules: the services (validation, firing once per tick, missed ticks, broken
schedules, concurrent schedulers on PostgreSQL), the pages, the admin, the CLI, and real
workers starting the runs."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.core.management import CommandError, call_command
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from runs import schedules, services
from runs.models import Run, RunEvent, Schedule
from runs.schedules import ScheduleInvalid, ScheduleNotFound
from stepflow import Param, Workflow, register, step
from stepflow.params import MASK
from stepflow.registry import registry
from tests.conftest import ROOT, WORKER_ENV, _database_url, wait_for, wait_run

SECRET = "tok-very-secret-42"


@step()
def charge(ctx: Any) -> None:
    return None


register(
    Workflow(
        "t_sched_secret",
        [charge],
        params=[
            Param("token", "str", secret=True, required=True),
            Param("count", "int", default=1),
        ],
    ),
    replace=True,
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


NOW = utc(2026, 11, 21, 12)


def make(
    name: str = "nightly",
    workflow: str = "t_deploy",
    cron: str = "30 2 * * *",
    tz: str = "Europe/Berlin",
    params: dict[str, Any] | None = None,
    **kw: Any,
) -> Schedule:
    kw.setdefault("now", NOW)
    return schedules.save_schedule(name, workflow, cron, tz, params or {}, **kw)


def invalid(**overrides: Any) -> ScheduleInvalid:
    values: dict[str, Any] = {
        "name": "nightly",
        "workflow": "t_deploy",
        "cron": "30 2 * * *",
        "tz": "UTC",
        "params": {},
    }
    values.update(overrides)
    with pytest.raises(ScheduleInvalid) as exc:
        schedules.save_schedule(
            values["name"], values["workflow"], values["cron"], values["tz"], values["params"]
        )
    return exc.value


@pytest.fixture
def registry_snapshot() -> Iterator[None]:
    saved = registry.snapshot()
    yield
    registry.restore(saved)


# == services =================================================================================
@pytest.mark.django_db
class TestSave:
    def test_computes_the_next_tick_in_the_time_zone_and_keeps_the_given_params(self) -> None:
        user = User.objects.create_user("sam")
        s = make(params={"sleep": "0.5", "note": "n"}, user=user, note="why")
        s.refresh_from_db()
        # 02:30 in Berlin (CET, +01:00) on the 22nd is 01:30 UTC.
        assert s.next_run_at == utc(2026, 11, 22, 1, 30)
        assert (s.name, s.workflow, s.cron, s.timezone) == (
            "nightly",
            "t_deploy",
            "30 2 * * *",
            "Europe/Berlin",
        )
        assert s.params == {"sleep": 0.5, "note": "n"}  # typed; defaults not frozen in
        assert (s.enabled, s.last_run_at, s.created_by, s.note) == (True, None, user, "why")

    def test_only_the_params_given_are_stored(self) -> None:
        assert make(params={"note": "x"}).params == {"note": "x"}
        assert make("other", params={}).params == {}

    def test_cron_whitespace_is_normalised_and_macros_kept(self) -> None:
        assert make(cron="  30   2 * *  * ").cron == "30 2 * * *"
        s = make("m", cron="@monthly", tz="UTC")
        assert (s.cron, s.next_run_at) == ("@monthly", utc(2026, 12, 1))

    def test_every_bad_value_is_reported_at_once_and_nothing_is_saved(self) -> None:
        exc = invalid(name=" ", workflow="nope", cron="61 * * * *", tz="Mars/Base")
        assert exc.errors == {
            "name": "A schedule needs a name",
            "workflow": f"No workflow named 'nope' is registered (registered: "
            f"{', '.join(registry.names())})",
            "cron": "minute field '61' is out of range 0-59",
            "timezone": "Unknown time zone 'Mars/Base': use an IANA name such as UTC or "
            "Europe/Berlin",
        }
        assert exc.message == "; ".join(exc.errors.values())
        assert Schedule.objects.count() == 0

    def test_params_are_checked_with_the_workflows_params(self) -> None:
        exc = invalid(params={"sleep": "soon", "colour": "red"})
        assert exc.errors == {
            "params": "Invalid parameters: colour: unknown parameter (declared: sleep, note); "
            "sleep: expected a number, got 'soon'"
        }
        assert exc.param_errors == {
            "colour": "unknown parameter (declared: sleep, note)",
            "sleep": "expected a number, got 'soon'",
        }
        assert invalid(workflow="t_sched_secret").errors == {
            "params": "Invalid parameters: token: this parameter is required"
        }
        assert invalid(params=[1, 2]).errors == {
            "params": "Invalid parameters: parameters must be a JSON object"
        }
        assert Schedule.objects.count() == 0

    def test_names_are_unique_and_at_most_100_characters(self) -> None:
        make()
        assert invalid().errors == {"name": "A schedule named 'nightly' already exists"}
        assert invalid(name="x" * 101).errors == {
            "name": "A schedule's name can be at most 100 characters long"
        }

    def test_secrets_are_stored_masked_when_shown_and_kept_when_the_mask_comes_back(self) -> None:
        s = make(workflow="t_sched_secret", params={"token": SECRET, "count": "3"})
        assert s.params == {"token": SECRET, "count": 3}
        assert schedules.masked_params(s) == {"token": MASK, "count": 3}
        edited = schedules.save_schedule(
            "nightly",
            "t_sched_secret",
            "30 2 * * *",
            "Europe/Berlin",
            {"token": MASK, "count": 4},
            instance=s,
            now=NOW,
        )
        edited.refresh_from_db()
        assert edited.params == {"token": SECRET, "count": 4}

    def test_an_edit_keeps_the_next_tick_unless_cron_zone_or_enabled_changed(self) -> None:
        s = make()
        later = NOW + timedelta(hours=3)
        same = schedules.save_schedule(
            "nightly",
            "t_deploy",
            "30 2 * * *",
            "Europe/Berlin",
            {"note": "x"},
            instance=s,
            now=later,
        )
        assert same.next_run_at == utc(2026, 11, 22, 1, 30)
        moved = schedules.save_schedule(
            "nightly", "t_deploy", "30 2 * * *", "UTC", {}, instance=s, now=later
        )
        assert moved.next_run_at == utc(2026, 11, 22, 2, 30)
        off = schedules.save_schedule(
            "nightly", "t_deploy", "30 2 * * *", "UTC", {}, instance=s, enabled=False
        )
        assert (off.enabled, off.next_run_at) == (False, None)

    def test_enable_starts_from_the_next_tick_after_now_and_disable_clears_it(self) -> None:
        s = make(tz="UTC")
        off = schedules.set_enabled(s, False)
        assert (off.enabled, off.next_run_at) == (False, None)
        on = schedules.set_enabled("nightly", True, now=utc(2026, 12, 1, 3))
        # Ticks missed while disabled are not started: the next is the one after now.
        assert (on.enabled, on.next_run_at) == (True, utc(2026, 12, 2, 2, 30))
        again = schedules.set_enabled(on.pk, True, now=utc(2027, 1, 1))
        assert again.next_run_at == utc(2026, 12, 2, 2, 30)  # already enabled: unchanged

    def test_delete_keeps_the_runs(self) -> None:
        s = make(tz="UTC")
        Schedule.objects.filter(pk=s.pk).update(next_run_at=NOW)
        (run,) = schedules.fire_due(NOW)
        assert schedules.delete_schedule("nightly") == ("nightly", 1)
        run.refresh_from_db()
        assert (run.schedule_id, run.origin) == (None, "schedule nightly")
        with pytest.raises(ScheduleNotFound) as exc:
            schedules.delete_schedule("nightly")
        assert exc.value.message == "No schedule named 'nightly'"

    def test_preview(self) -> None:
        got = schedules.preview("0 9 * * mon", "Europe/Berlin", 3, now=NOW)
        assert [t.isoformat() for t in got] == [
            "2026-11-23T09:00:00+01:00",
            "2026-11-30T09:00:00+01:00",
            "2026-12-07T09:00:00+01:00",
        ]


# -- firing ------------------------------------------------------------------------------------
@pytest.mark.django_db
class TestFire:
    def test_nothing_is_due_before_the_tick(self) -> None:
        make()
        assert schedules.fire_due(utc(2026, 11, 22, 1, 29, 59)) == []
        assert Run.objects.count() == 0

    def test_a_due_tick_starts_one_run_and_moves_the_schedule_on(self) -> None:
        s = make(params={"note": "nightly build"})
        tick = utc(2026, 11, 22, 1, 30)
        (run,) = schedules.fire_due(tick + timedelta(milliseconds=300))
        run.refresh_from_db()
        assert (run.workflow, run.params, run.status) == (
            "t_deploy",
            {"sleep": 0.0, "note": "nightly build"},
            "running",
        )
        assert (run.schedule_id, run.scheduled_for, run.created_by) == (s.pk, tick, None)
        assert run.idempotency_key == f"schedule:{s.pk}:2026-11-22T01:30:00+00:00"
        assert run.origin == "schedule nightly"
        created = RunEvent.objects.get(run=run, kind="created")
        assert (created.message, created.actor) == (
            "Started by schedule nightly",
            "schedule nightly",
        )
        s.refresh_from_db()
        assert (s.last_run_at, s.next_run_at) == (tick, utc(2026, 11, 23, 1, 30))
        # The same moment again: nothing more is due.
        assert schedules.fire_due(tick + timedelta(seconds=1)) == []
        assert Run.objects.count() == 1

    def test_a_tick_fired_twice_still_has_one_run(self) -> None:
        s = make()
        tick = utc(2026, 11, 22, 1, 30)
        (run,) = schedules.fire_due(tick)
        # As if another scheduler had read the schedule before it moved on.
        Schedule.objects.filter(pk=s.pk).update(next_run_at=tick)
        assert schedules.fire_due(tick + timedelta(seconds=2)) == []
        assert list(Run.objects.values_list("pk", flat=True)) == [run.pk]
        s.refresh_from_db()
        assert s.next_run_at == utc(2026, 11, 23, 1, 30)

    def test_missed_ticks__only_the_latest_runs_then_it_continues_from_now(self) -> None:
        s = make("hourly", cron="@hourly", tz="UTC")
        assert s.next_run_at == utc(2026, 11, 21, 13)
        now = utc(2026, 11, 21, 17, 20)  # 13:00 .. 17:00 were missed
        (run,) = schedules.fire_due(now)
        assert run.scheduled_for == utc(2026, 11, 21, 17)
        s.refresh_from_db()
        assert (s.last_run_at, s.next_run_at) == (utc(2026, 11, 21, 17), utc(2026, 11, 21, 18))
        assert Run.objects.count() == 1

    def test_missed_for_months__one_run_found_quickly(self) -> None:
        s = make("often", cron="*/5 * * 1 *", tz="UTC")  # every 5 min in January only
        assert s.next_run_at == utc(2027, 1, 1)
        started = time.monotonic()
        (run,) = schedules.fire_due(utc(2027, 5, 17, 9, 3))
        assert time.monotonic() - started < 5
        assert run.scheduled_for == utc(2027, 1, 31, 23, 55)
        s.refresh_from_db()
        assert s.next_run_at == utc(2028, 1, 1)

    def test_a_next_run_set_by_hand_fires_at_that_time(self) -> None:
        s = make(cron="0 0 1 1 *", tz="UTC")
        due = utc(2026, 11, 21, 12, 0, 7, 123456)
        Schedule.objects.filter(pk=s.pk).update(next_run_at=due)
        (run,) = schedules.fire_due(due + timedelta(seconds=1))
        assert run.scheduled_for == due
        assert run.idempotency_key == f"schedule:{s.pk}:2026-11-21T12:00:07.123456+00:00"
        s.refresh_from_db()
        assert s.next_run_at == utc(2027, 1, 1)

    def test_disabled_schedules_do_not_fire(self) -> None:
        s = make(enabled=False)
        Schedule.objects.filter(pk=s.pk).update(next_run_at=NOW)  # even with a stale tick
        assert schedules.fire_due(NOW + timedelta(days=3)) == []

    def test_an_unregistered_workflow_skips_the_tick_with_a_warning(
        self, registry_snapshot: None, caplog: pytest.LogCaptureFixture
    ) -> None:
        register(Workflow("t_sched_gone", [charge]), replace=True)
        s = make(workflow="t_sched_gone", tz="UTC")
        ok = make("ok", tz="UTC")
        registry.unregister("t_sched_gone")
        assert schedules.problem(s).startswith("No workflow named 't_sched_gone' is registered")
        assert schedules.problem(ok) == ""
        with caplog.at_level(logging.WARNING, logger="stepflow.schedules"):
            started = schedules.fire_due(utc(2026, 11, 22, 2, 30, 1))
        assert [r.schedule_id for r in started] == [ok.pk]  # the others still fire
        messages = [r.getMessage() for r in caplog.records if r.name == "stepflow.schedules"]
        assert messages == [
            "schedule 'nightly': no run for 2026-11-22T02:30:00+00:00: No workflow named "
            f"'t_sched_gone' is registered (registered: {', '.join(registry.names())}); "
            "next tick 2026-11-23T02:30:00+00:00"
        ]
        s.refresh_from_db()
        # Not retried in a loop: the tick is skipped, the next one will try again.
        assert (s.next_run_at, s.last_run_at) == (utc(2026, 11, 23, 2, 30), None)

    def test_params_that_no_longer_validate_skip_the_tick(self) -> None:
        s = make(tz="UTC")
        Schedule.objects.filter(pk=s.pk).update(params={"sleep": "soon"})
        s.refresh_from_db()
        assert schedules.problem(s) == "Invalid parameters: sleep: expected a number, got 'soon'"
        assert schedules.fire_due(utc(2026, 11, 22, 2, 30)) == []
        s.refresh_from_db()
        assert s.next_run_at == utc(2026, 11, 23, 2, 30)
        assert Run.objects.count() == 0

    def test_a_cron_broken_in_the_database_stops_the_schedule(self) -> None:
        s = make(tz="UTC")
        Schedule.objects.filter(pk=s.pk).update(cron="61 * * * *")
        assert schedules.fire_due(utc(2026, 11, 22, 3)) == []
        s.refresh_from_db()
        assert (s.enabled, s.next_run_at) == (True, None)
        assert schedules.problem(s) == "minute field '61' is out of range 0-59"

    def test_next_due(self) -> None:
        assert schedules.next_due() is None
        make(tz="UTC")
        make("early", cron="0 13 * * *", tz="UTC")
        make("off", cron="* * * * *", enabled=False)
        assert schedules.next_due() == utc(2026, 11, 21, 13)


def in_threads(n: int, func: Callable[[int], Any]) -> list[Any]:
    """Run func(i) in n threads released at once, each with its own connection."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def target(i: int) -> None:
        try:
            barrier.wait()
            results[i] = func(i)
        except Exception as exc:
            results[i] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_schedulers_start_one_run_per_tick(redis_conn: Any) -> None:
    names = ["a", "b", "c"]
    for name in names:
        make(name, tz="UTC")
    tick = utc(2026, 11, 22, 2, 30)
    for round_ in range(3):
        now = tick + timedelta(days=round_, milliseconds=100)
        results = in_threads(
            8, lambda i, now=now: schedules.fire_due(now + timedelta(microseconds=i))
        )
        assert [type(r) for r in results] == [list] * 8
        started = [run for r in results for run in r]
        assert sorted(run.schedule.name for run in started) == names
    assert Run.objects.count() == 9
    ticks = sorted(Run.objects.values_list("schedule__name", "scheduled_for"))
    assert ticks == [(n, tick + timedelta(days=d)) for n in names for d in range(3)]
    assert RunEvent.objects.filter(kind="created").count() == 9
    for s in Schedule.objects.all():
        assert (s.last_run_at, s.next_run_at) == (
            tick + timedelta(days=2),
            tick + timedelta(days=3),
        )


# == pages ===================================================================================
@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("olga", password="pw-olga-123")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    return user


@pytest.fixture
def op_client(operator: User) -> Client:
    c = Client()
    c.force_login(operator)
    return c


@pytest.fixture
def viewer_client() -> Client:
    c = Client()
    c.force_login(User.objects.create_user("victor", password="pw-victor-123"))
    return c


def form_data(**fields: Any) -> dict[str, Any]:
    data = {
        "name": "nightly",
        "workflow": "t_deploy",
        "shown": "t_deploy",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "enabled": "on",
        "note": "",
        "p_sleep": "0",
        "p_note": "from the page",
    }
    data.update(fields)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.django_db
class TestPages:
    @pytest.mark.parametrize("url", ["/schedules/", "/schedules/1/", "/schedules/preview/"])
    def test_need_a_login(self, client: Client, url: str) -> None:
        response = client.get(url)
        assert (response.status_code, response["Location"]) == (302, f"/login/?next={url}")

    def test_list__empty_state_and_the_create_form(self, op_client: Client) -> None:
        body = op_client.get("/schedules/").content.decode()
        assert "No schedules yet — create one below." in body
        assert 'aria-current="page">Schedules</a>' in body
        assert 'id="new-schedule"' in body
        first = registry.names()[0]
        assert f'<option value="{first}" selected>' in body
        chosen = op_client.get("/schedules/?workflow=t_deploy").content.decode()
        assert 'name="p_sleep"' in chosen and 'name="p_note"' in chosen
        assert '<input type="hidden" name="shown" value="t_deploy"' in chosen

    def test_list__viewer_reads_without_forms(self, viewer_client: Client) -> None:
        make(params={"note": "hello"})
        body = viewer_client.get("/schedules/").content.decode()
        assert "nightly" in body and "hello" in body and "<code>30 2 * * *</code>" in body
        assert '<form method="post"' not in body.split("</header>")[1]
        assert "needs the operator permission" in body

    def test_list__shows_masked_params_next_run_in_its_zone_and_problems(
        self, op_client: Client
    ) -> None:
        make(workflow="t_sched_secret", params={"token": SECRET})
        broken = make("broken", tz="UTC")
        Schedule.objects.filter(pk=broken.pk).update(params={"sleep": "soon"})
        body = op_client.get("/schedules/").content.decode()
        assert SECRET not in body
        assert MASK in body
        assert "2026-11-22 02:30 CET" in body
        assert (
            "⚠ cannot start: Invalid parameters: sleep: expected a number, got &#x27;soon&#x27;"
            in body
        )
        assert f'action="/schedules/{broken.pk}/disable/"' in body

    def test_create__saves_and_goes_to_the_schedule(
        self, op_client: Client, operator: User
    ) -> None:
        response = op_client.post("/schedules/", form_data())
        s = Schedule.objects.get()
        assert response.status_code == 302
        assert response["Location"] == f"/schedules/{s.pk}/"
        assert (s.cron, s.timezone, s.params, s.created_by) == (
            "30 2 * * *",
            "Europe/Berlin",
            {"sleep": 0.0, "note": "from the page"},
            operator,
        )
        page = op_client.get(response["Location"]).content.decode()
        when = schedules.local_time(s.next_run_at, "Europe/Berlin")
        assert f"Created schedule nightly; next run {when}" in page

    def test_create__errors_next_to_their_fields_and_nothing_saved(self, op_client: Client) -> None:
        response = op_client.post(
            "/schedules/", form_data(cron="61 * * * *", timezone="Mars", p_sleep="soon")
        )
        assert response.status_code == 400
        form = response.context["form"]
        assert form.errors == {
            "cron": ["minute field '61' is out of range 0-59"],
            "timezone": ["Unknown time zone 'Mars': use an IANA name such as UTC or Europe/Berlin"],
            "p_sleep": ["expected a number, got 'soon'"],
        }
        body = response.content.decode()
        # Once, next to the field (the preview under it does not repeat it).
        assert body.count("minute field &#x27;61&#x27; is out of range 0-59") == 1
        assert Schedule.objects.count() == 0

    def test_create__secret_params_are_required_and_never_echoed_masked(
        self, op_client: Client
    ) -> None:
        data = form_data(workflow="t_sched_secret", shown="t_sched_secret", p_token="", p_count="2")
        response = op_client.post("/schedules/", data)
        assert response.context["form"].errors == {"p_token": ["this parameter is required"]}
        response = op_client.post("/schedules/", {**data, "p_token": SECRET})
        s = Schedule.objects.get()
        assert s.params == {"token": SECRET, "count": 2}
        page = op_client.get(f"/schedules/{s.pk}/").content.decode()
        assert SECRET not in page
        assert f'name="p_token" value="{MASK}"' in page

    def test_create__a_workflow_changed_without_javascript_shows_its_fields_first(
        self, op_client: Client
    ) -> None:
        response = op_client.post("/schedules/", form_data(workflow="t_sched_secret"))
        assert response.status_code == 200
        body = response.content.decode()
        assert "The workflow changed: fill in the parameters of t_sched_secret, then save." in body
        assert 'name="p_token"' in body and 'name="p_sleep"' not in body
        assert 'value="30 2 * * *"' in body
        assert Schedule.objects.count() == 0

    def test_create__preview_button_saves_nothing(self, op_client: Client) -> None:
        response = op_client.post("/schedules/", form_data(preview="1", cron="0 9 * * mon"))
        assert response.status_code == 200
        assert response.content.decode().count("CET</li>") == 5
        assert Schedule.objects.count() == 0

    def test_viewer_cannot_change_anything(self, viewer_client: Client) -> None:
        s = make()
        assert viewer_client.post("/schedules/", form_data(name="x")).status_code == 403
        assert viewer_client.post(f"/schedules/{s.pk}/", form_data()).status_code == 403
        for action in ("disable", "enable", "delete"):
            assert viewer_client.post(f"/schedules/{s.pk}/{action}/").status_code == 403
        assert Schedule.objects.get().enabled is True
        assert "Changing schedules needs the operator permission" in (
            viewer_client.get(f"/schedules/{s.pk}/").content.decode()
        )

    def test_actions__enable_disable_delete(self, op_client: Client) -> None:
        s = make(tz="UTC")
        response = op_client.post(f"/schedules/{s.pk}/disable/", {"next": "/schedules/"})
        assert (response.status_code, response["Location"]) == (302, "/schedules/")
        assert Schedule.objects.get().next_run_at is None
        assert "Disabled schedule nightly" in op_client.get("/schedules/").content.decode()
        response = op_client.post(f"/schedules/{s.pk}/enable/", {"next": "https://evil.example/"})
        assert response["Location"] == f"/schedules/{s.pk}/"
        assert Schedule.objects.get().enabled is True
        response = op_client.post(f"/schedules/{s.pk}/delete/")
        assert response["Location"] == "/schedules/"
        assert Schedule.objects.count() == 0
        assert (
            "Deleted schedule nightly; the 0 run(s) it started are kept"
            in op_client.get("/schedules/").content.decode()
        )
        assert op_client.post(f"/schedules/{s.pk}/disable/").status_code == 404
        other = make("other")
        assert op_client.get(f"/schedules/{other.pk}/disable/").status_code == 405
        assert op_client.post(f"/schedules/{other.pk}/explode/").status_code == 404

    def test_actions__need_the_csrf_token(self, operator: User) -> None:
        s = make()
        c = Client(enforce_csrf_checks=True)
        c.force_login(operator)
        assert c.post(f"/schedules/{s.pk}/disable/").status_code == 403
        assert c.post("/schedules/", form_data(name="x")).status_code == 403
        assert Schedule.objects.get().enabled is True

    def test_detail__edit_and_the_runs_it_started_newest_first(self, op_client: Client) -> None:
        s = make(tz="UTC", params={"note": "old"})
        first = schedules.fire_due(utc(2026, 11, 22, 2, 30))[0]
        second = schedules.fire_due(utc(2026, 11, 23, 2, 30))[0]
        other = services.start_run("t_deploy", {})
        body = op_client.get(f"/schedules/{s.pk}/").content.decode()
        assert body.index(f"#{second.pk}</a>") < body.index(f"#{first.pk}</a>")
        assert f"#{other.pk}</a>" not in body
        assert "2026-11-23 02:30 UTC" in body and "2026-11-22 02:30 UTC" in body
        assert f'href="/?schedule={s.pk}">All 2 runs of nightly in the history' in body
        response = op_client.post(
            f"/schedules/{s.pk}/",
            form_data(cron="0 6 * * *", timezone="UTC", p_note="new", schedule_id=str(s.pk)),
        )
        assert (response.status_code, response["Location"]) == (302, f"/schedules/{s.pk}/")
        s.refresh_from_db()
        assert (s.cron, s.params["note"]) == ("0 6 * * *", "new")
        bad = op_client.post(f"/schedules/{s.pk}/", form_data(name="", timezone="UTC"))
        assert bad.status_code == 400
        assert bad.context["form"].errors == {"name": ["This field is required."]}
        assert op_client.get("/schedules/999999/").status_code == 404

    def test_detail__editing_keeps_a_masked_secret(self, op_client: Client) -> None:
        s = make(workflow="t_sched_secret", params={"token": SECRET})
        data = form_data(
            workflow="t_sched_secret", shown="t_sched_secret", p_token=MASK, p_count="5"
        )
        response = op_client.post(f"/schedules/{s.pk}/", data)
        assert response.status_code == 302
        s.refresh_from_db()
        assert s.params == {"token": SECRET, "count": 5}

    def test_preview_and_params_partials(self, op_client: Client) -> None:
        body = op_client.get(
            "/schedules/preview/", {"cron": "0 9 * * mon", "timezone": "Europe/Berlin"}
        ).content.decode()
        assert body.startswith('<div id="cron-preview"')
        assert body.count("<li>Mon ") == 5
        bad = op_client.get("/schedules/preview/", {"cron": "0 9 * * funday"}).content.decode()
        assert (
            "day-of-week field &#x27;funday&#x27; is not a number or a day name (sun..sat)" in bad
        )
        tz = op_client.get("/schedules/preview/", {"cron": "@daily", "timezone": "X"})
        assert "Unknown time zone &#x27;X&#x27;" in tz.content.decode()
        empty = op_client.get("/schedules/preview/").content.decode()
        assert "Type a cron expression to see its next runs." in empty
        params = op_client.get("/schedules/params/", {"workflow": "t_sched_secret"})
        text = params.content.decode()
        assert text.startswith('<div id="schedule-params"')
        assert 'name="p_token"' in text and 'value="t_sched_secret"' in text

    def test_escaping(self, op_client: Client) -> None:
        xss = "<img src=x onerror=alert(1)>"
        make(name=xss, params={"note": xss}, note=xss)
        s = Schedule.objects.get()
        for url in ("/schedules/", f"/schedules/{s.pk}/"):
            body = op_client.get(url).content.decode()
            assert xss not in body
            assert "&lt;img src=x onerror=alert(1)&gt;" in body


@pytest.mark.django_db
class TestHistory:
    def test_marker_and_filter(self, op_client: Client) -> None:
        s = make(tz="UTC")
        (by_schedule,) = schedules.fire_due(utc(2026, 11, 22, 2, 30))
        by_hand = services.start_run("t_deploy", {})
        body = op_client.get("/").content.decode()
        row = body.split(f'<tr id="run-{by_schedule.pk}"')[1].split("</tr>")[0]
        assert (
            f'<a class="pill" href="/schedules/{s.pk}/" title="Started by schedule nightly '
            'for its tick at 2026-11-22 02:30 UTC"><span aria-hidden="true">⟳</span> nightly</a>'
        ) in row
        assert "schedule nightly" in row  # who started it
        other = body.split(f'<tr id="run-{by_hand.pk}"')[1].split("</tr>")[0]
        assert "⟳" not in other
        filtered = op_client.get(f"/?schedule={s.pk}")
        assert [r.pk for r in filtered.context["page"].rows] == [by_schedule.pk]
        hidden = f'<input type="hidden" name="schedule" value="{s.pk}">'
        assert hidden in filtered.content.decode()
        assert op_client.get("/?schedule=abc").context["query"].errors == [
            "Schedule must be a schedule's id, not 'abc'"
        ]
        # The polled row keeps its marker.
        polled = op_client.get(f"/?row={by_schedule.pk}", headers={"HX-Request": "true"})
        assert "⟳</span> nightly" in polled.content.decode()


# == admin ===================================================================================
def admin_data(**fields: Any) -> dict[str, Any]:
    data = {
        "name": "nightly",
        "workflow": "t_deploy",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "enabled": "on",
        "params_json": '{"note": "admin"}',
        "note": "",
        "_save": "Save",
    }
    data.update(fields)
    return data


@pytest.mark.django_db
class TestAdmin:
    def test_add__saved_through_the_service(self, admin_client: Client, admin_user: User) -> None:
        response = admin_client.post(reverse("admin:runs_schedule_add"), admin_data())
        assert response.status_code == 302
        s = Schedule.objects.get()
        assert (s.params, s.created_by, s.next_run_at is not None) == (
            {"note": "admin"},
            admin_user,
            True,
        )

    @pytest.mark.parametrize(
        ("fields", "errors"),
        [
            ({"cron": "* * * * 9"}, {"cron": ["day-of-week field '9' is out of range 0-7"]}),
            (
                {"timezone": "Nowhere"},
                {
                    "timezone": [
                        "Unknown time zone 'Nowhere': use an IANA name such as UTC or Europe/Berlin"
                    ]
                },
            ),
            (
                {"params_json": '{"sleep": "soon"}'},
                {"params_json": ["Invalid parameters: sleep: expected a number, got 'soon'"]},
            ),
            (
                {"params_json": "{nope"},
                {
                    "params_json": [
                        "Invalid JSON in the parameters: Expecting property name enclosed in "
                        "double quotes at line 1, column 2"
                    ]
                },
            ),
            ({"params_json": "[1]"}, {"params_json": ["The parameters must be a JSON object"]}),
            (
                {"workflow": "nope"},
                {"workflow": ["Select a valid choice. nope is not one of the available choices."]},
            ),
        ],
    )
    def test_add__bad_values_are_form_errors_and_nothing_is_saved(
        self, admin_client: Client, fields: dict[str, str], errors: dict[str, list[str]]
    ) -> None:
        response = admin_client.post(reverse("admin:runs_schedule_add"), admin_data(**fields))
        assert response.status_code == 200
        assert response.context["adminform"].form.errors == errors
        assert Schedule.objects.count() == 0

    def test_change__shows_secrets_masked_and_keeps_them(self, admin_client: Client) -> None:
        s = make(workflow="t_sched_secret", params={"token": SECRET})
        url = reverse("admin:runs_schedule_change", args=[s.pk])
        page = admin_client.get(url).content.decode()
        assert SECRET not in page and MASK in page
        data = admin_data(
            workflow="t_sched_secret", params_json=f'{{"token": "{MASK}", "count": 9}}'
        )
        assert admin_client.post(url, data).status_code == 302
        s.refresh_from_db()
        assert s.params == {"token": SECRET, "count": 9}
        listing = admin_client.get(reverse("admin:runs_schedule_changelist")).content.decode()
        assert "2026-11-22 02:30 CET" in listing

    def test_enable_and_disable_actions(self, admin_client: Client) -> None:
        a, b = make("a"), make("b")
        url = reverse("admin:runs_schedule_changelist")
        response = admin_client.post(
            url,
            {"action": "disable_schedules", "_selected_action": [a.pk, b.pk], "index": 0},
            follow=True,
        )
        assert [str(m) for m in response.context["messages"]] == ["Disabled a", "Disabled b"]
        assert list(Schedule.objects.values_list("enabled", "next_run_at")) == [(False, None)] * 2
        response = admin_client.post(
            url, {"action": "enable_schedules", "_selected_action": [a.pk], "index": 0}, follow=True
        )
        a.refresh_from_db()
        assert a.enabled and a.next_run_at is not None
        shown = [str(m) for m in response.context["messages"]]
        assert shown == [f"Enabled a; next run {schedules.local_time(a.next_run_at, a.timezone)}"]

    def test_staff_without_the_operate_permission_cannot_change_schedules(self) -> None:
        user = User.objects.create_user("st", password="pw", is_staff=True)
        for codename in ("view_schedule", "add_schedule", "change_schedule", "delete_schedule"):
            user.user_permissions.add(Permission.objects.get(codename=codename))
        c = Client()
        c.force_login(user)
        s = make()
        assert c.get(reverse("admin:runs_schedule_add")).status_code == 403
        assert (
            c.post(reverse("admin:runs_schedule_change", args=[s.pk]), admin_data()).status_code
            == 403
        )
        assert c.get(reverse("admin:runs_schedule_changelist")).status_code == 200


# == CLI =====================================================================================
def cli(*args: str) -> str:
    out = io.StringIO()
    call_command("stepflow", *args, stdout=out)
    return out.getvalue()


def cli_error(*args: str) -> str:
    with pytest.raises(CommandError) as exc:
        cli(*args)
    return str(exc.value)


@pytest.mark.django_db
class TestCli:
    def test_add_list_enable_disable_delete(self) -> None:
        assert cli("schedules") == "No schedules.\n"
        out = cli(
            "schedule", "add", "nightly", "t_sched_secret", "30 2 * * *",
            "--tz", "Europe/Berlin", "--param", f"token={SECRET}", "-p", "count=2",
        )  # fmt: skip
        s = Schedule.objects.get()
        when = schedules.local_time(s.next_run_at, "Europe/Berlin")
        assert when.endswith((" CET", " CEST"))
        assert out == (
            "Created schedule nightly (t_sched_secret, 30 2 * * *, Europe/Berlin); "
            f"next run {when}\n"
        )
        assert s.params == {"token": SECRET, "count": 2}
        out = cli("schedule", "add", "hourly", "t_deploy", "@hourly", "--disabled")
        assert out == "Created schedule hourly (t_deploy, @hourly, UTC); disabled\n"
        assert cli("schedules") == (
            f"{'hourly':<20} {'t_deploy':<20} {'@hourly':<16} {'UTC':<16} disabled  "
            "next —  last —  params {}\n"
            f"{'nightly':<20} {'t_sched_secret':<20} {'30 2 * * *':<16} {'Europe/Berlin':<16} "
            f'enabled   next {when}  last —  params {{"count": 2, "token": "{MASK}"}}\n'
        )
        out = cli("schedule", "enable", "hourly")
        hourly = Schedule.objects.get(name="hourly")
        assert out == (
            f"Schedule hourly enabled; next run {schedules.local_time(hourly.next_run_at, 'UTC')}\n"
        )
        assert cli("schedule", "disable", "nightly") == "Schedule nightly disabled\n"
        assert cli("schedule", "delete", "nightly") == (
            "Deleted schedule nightly (the 0 run(s) it started are kept)\n"
        )
        assert list(Schedule.objects.values_list("name", flat=True)) == ["hourly"]

    def test_a_schedule_that_cannot_start_says_why(self) -> None:
        s = make(tz="UTC")
        Schedule.objects.filter(pk=s.pk).update(params={"sleep": "soon"})
        assert (
            cli("schedules")
            .rstrip("\n")
            .endswith("  ⚠ cannot start: Invalid parameters: sleep: expected a number, got 'soon'")
        )

    def test_errors_are_one_clear_line(self) -> None:
        add = ("schedule", "add")
        assert cli_error(*add, "x", "t_deploy", "61 * * * *") == (
            "minute field '61' is out of range 0-59"
        )
        assert cli_error(*add, "x", "t_deploy", "@daily", "--tz", "Mars") == (
            "Unknown time zone 'Mars': use an IANA name such as UTC or Europe/Berlin"
        )
        assert cli_error(*add, "x", "t_deploy", "@daily", "--param", "sleep=soon") == (
            "Invalid parameters: sleep: expected a number, got 'soon'"
        )
        assert cli_error(*add, "x", "t_deploy", "@daily", "--param", "novalue") == (
            "--param takes key=value, not 'novalue'"
        )
        assert cli_error(*add, "x", "nope", "0 0 * *") == (
            f"No workflow named 'nope' is registered (registered: {', '.join(registry.names())}); "
            "A cron expression has 5 fields (minute hour day-of-month month day-of-week), "
            "not 4: '0 0 * *'"
        )
        make("x")
        assert cli_error(*add, "x", "t_deploy", "@daily") == "A schedule named 'x' already exists"
        for verb in ("enable", "disable", "delete"):
            assert cli_error("schedule", verb, "nope") == "No schedule named 'nope'"
        assert Schedule.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_cli_error_exit_code_through_manage_py() -> None:
    env = {**os.environ, **WORKER_ENV, "DATABASE_URL": _database_url()}
    proc = subprocess.run(
        [sys.executable, "manage.py", "stepflow", "schedule", "add", "x", "t_deploy", "61 * * * *"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr.strip() == "CommandError: minute field '61' is out of range 0-59"
    assert Schedule.objects.count() == 0


# == real workers ============================================================================
def due_now(name: str) -> Schedule:
    """A yearly schedule made due now (so no other tick comes during the test)."""
    s = schedules.save_schedule(name, "t_deploy", "0 0 1 1 *", "UTC", {"note": name})
    Schedule.objects.filter(pk=s.pk).update(next_run_at=timezone.now())
    s.refresh_from_db()
    return s


@pytest.mark.django_db(transaction=True)
def test_worker_starts_the_due_run_once_and_it_completes(start_worker: Any) -> None:
    start_worker()
    s = due_now("soon")
    tick = s.next_run_at
    run = wait_for(lambda: Run.objects.filter(schedule=s).first(), 30, message="a scheduled run")
    assert wait_run(run.pk).status == "completed"
    run.refresh_from_db()
    assert (run.schedule_id, run.scheduled_for, run.origin) == (s.pk, tick, "schedule soon")
    assert RunEvent.objects.get(run=run, kind="created").message == "Started by schedule soon"
    s.refresh_from_db()
    assert (s.last_run_at, s.next_run_at) == (
        tick,
        datetime(timezone.now().year + 1, 1, 1, tzinfo=UTC),
    )
    time.sleep(1.5)
    assert Run.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_workers_start_one_run_per_tick(start_worker: Any) -> None:
    workers = [start_worker(), start_worker()]
    s = due_now("twice")
    wait_for(lambda: Run.objects.filter(schedule=s).exists(), 30, message="the first tick")
    # A second tick, made due while both schedulers are running.
    Schedule.objects.filter(pk=s.pk).update(next_run_at=timezone.now())
    wait_for(lambda: Run.objects.filter(schedule=s).count() >= 2, 30, message="the second tick")
    time.sleep(5.5)  # longer than a scheduler's longest sleep: both had their chance
    runs = list(Run.objects.filter(schedule=s).order_by("pk"))
    assert len(runs) == 2
    assert len({r.scheduled_for for r in runs}) == 2
    for r in runs:
        assert wait_run(r.pk).status == "completed"
    assert RunEvent.objects.filter(kind="created").count() == 2
    assert all(w.proc.poll() is None for w in workers), [w.output() for w in workers]
