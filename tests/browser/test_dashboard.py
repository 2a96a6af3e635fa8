"""The dashboard in Chromium against a live server and a real worker: runs start,
fail, are retried, continued and cancelled from the page, which follows without reloads."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Page, expect

import tests.browser.xss_workflow  # noqa: F401  (registers t_xss in this process)
from runs import services
from runs.models import Run, RunEvent, StepRun
from tests.browser.xss_workflow import PAYLOAD
from tests.conftest import wait_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
]

WORKER_ENV = {"STEPFLOW_WORKFLOW_MODULES": "tests.workflows,tests.browser.xss_workflow"}
TIMEOUT = 30_000


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("olga", password="pw-olga-123")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    return user


@pytest.fixture
def worker(start_worker):  # type: ignore[no-untyped-def]
    return start_worker("default", "heavy", env=WORKER_ENV)


@pytest.fixture
def dialogs(page: Page) -> list[str]:
    seen: list[str] = []

    def on_dialog(dialog) -> None:  # type: ignore[no-untyped-def]
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    return seen


def login(page: Page, live_server, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator(".whoami")).to_contain_text(username)


def count_navigations(page: Page) -> list[str]:
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    return navigations


def status_line(page: Page):  # type: ignore[no-untyped-def]
    return page.locator("#run-status")


def test_start_from_form__run_completes_live(page: Page, live_server, operator, worker) -> None:  # type: ignore[no-untyped-def]
    login(page, live_server, "olga", "pw-olga-123")
    page.goto(f"{live_server.url}/workflows/t_deploy/")
    page.fill("#id_p_sleep", "0.3")
    page.fill("#id_p_note", "from the form")
    page.click("text=Start run >> nth=-1")
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    navigations = count_navigations(page)
    run = Run.objects.get()
    expect(status_line(page)).to_contain_text("completed", timeout=TIMEOUT)
    expect(page.locator(".progress-text")).to_contain_text("100%")
    expect(page.locator("#step-deploy")).to_contain_text("completed")
    assert navigations == []
    assert run.params == {"sleep": 0.3, "note": "from the form"}


def test_failed_build__retry_failed_from_the_page(  # type: ignore[no-untyped-def]
    page: Page, live_server, operator, worker, redis_conn
) -> None:
    redis_conn.set("fail:build", 1)
    run = services.start_run("t_deploy", {"sleep": 0}, user=operator)
    wait_run(run.pk, ("failed",))
    login(page, live_server, "olga", "pw-olga-123")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(status_line(page)).to_contain_text("failed")
    expect(page.locator("#step-build .error-msg")).to_have_text("RuntimeError: build exploded")
    page.locator("#step-build summary", has_text="Traceback").click()
    expect(page.locator("#step-build .traceback pre")).to_contain_text("Traceback")

    redis_conn.delete("fail:build")
    navigations = count_navigations(page)
    page.click("button[data-action=retry_failed]")
    panel = page.locator("#action-panel")
    expect(panel).to_contain_text("Will run build, template, deploy")
    expect(panel).to_contain_text("Keeps prepare")
    expect(panel.locator("[data-confirm]")).to_be_focused()
    panel.locator("[data-confirm]").click()
    expect(panel).to_contain_text(
        "Retried failed steps by olga — Will run build, template, deploy."
    )
    expect(status_line(page)).to_contain_text("completed", timeout=TIMEOUT)
    expect(page.locator(".events")).to_contain_text("olga")
    expect(page.locator(".events")).to_contain_text("Retried failed steps by olga")
    assert navigations == []
    run.refresh_from_db()
    assert (run.status, run.attempt) == ("completed", 2)
    assert RunEvent.objects.get(run=run, kind="resumed").user == operator


def test_continue_from_a_step(page: Page, live_server, operator, worker) -> None:  # type: ignore[no-untyped-def]
    run = services.start_run("t_deploy", {"sleep": 0}, user=operator)
    wait_run(run.pk, ("completed",))
    StepRun.objects.filter(run=run, name="template").update(items_done=3)
    login(page, live_server, "olga", "pw-olga-123")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    page.click("button[data-action=continue_from]")
    panel = page.locator("#action-panel")
    expect(panel.locator("select[name=step]")).to_be_visible()
    # The panel was just swapped in: wait until htmx has bound its change trigger.
    page.wait_for_function(
        "() => document.querySelector('#action-panel form.step-pick')"
        "?.['htmx-internal-data']?.initHash !== undefined"
    )
    panel.locator("select[name=step]").select_option("template")
    expect(panel).to_contain_text("Will run template, deploy")
    expect(panel).to_contain_text("Keeps prepare, build")
    # template has items done: the panel offers to clear them, and the plan says so.
    clear = panel.get_by_label(
        "Clear the 3 items already done by template (they are processed again)"
    )
    page.wait_for_function(
        "() => document.querySelector('#clear-items')"
        "?.['htmx-internal-data']?.initHash !== undefined"
    )
    clear.check()
    expect(panel).to_contain_text("Clears the items already done by template")
    expect(panel.locator("#clear-items")).to_be_checked()
    panel.locator("[data-confirm]").click()
    expect(panel).to_contain_text("Continued from template by olga")
    expect(panel).to_contain_text("Clears the items already done by template, deploy.")
    expect(page.locator(".events")).to_contain_text("Continued from template by olga")
    wait_run(run.pk, ("completed",), timeout=30)
    expect(status_line(page)).to_contain_text("completed", timeout=TIMEOUT)
    attempts = dict(StepRun.objects.filter(run=run).values_list("name", "attempts"))
    assert attempts == {"prepare": 1, "build": 1, "template": 2, "deploy": 2}
    assert StepRun.objects.get(run=run, name="template").items_done == 0


def test_cancel_a_running_run(page: Page, live_server, operator, worker) -> None:  # type: ignore[no-untyped-def]
    run = services.start_run("t_cancel", {}, user=operator)
    wait_run(run.pk, ("running",))
    login(page, live_server, "olga", "pw-olga-123")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator("#step-long_loop")).to_contain_text("running", timeout=TIMEOUT)
    page.click("button[data-action=cancel]")
    panel = page.locator("#action-panel")
    panel.locator("#cancel-reason").fill("wrong branch")
    panel.locator("[data-confirm]").click()
    expect(panel).to_contain_text("Cancelled by olga: wrong branch")
    expect(status_line(page)).to_contain_text("cancelled", timeout=TIMEOUT)
    expect(page.locator(".events")).to_contain_text("Cancelled by olga: wrong branch")
    assert Run.objects.get(pk=run.pk).status == "cancelled"


def test_viewer_sees_no_buttons(page: Page, live_server, operator) -> None:  # type: ignore[no-untyped-def]
    User.objects.create_user("victor", password="pw-victor-123")
    run = services.start_run("t_deploy", {"sleep": 0}, user=operator)
    login(page, live_server, "victor", "pw-victor-123")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator(".whoami")).to_contain_text("viewer")
    expect(page.locator("[data-action]")).to_have_count(0)


def test_xss_payload_in_error_and_log_is_text(  # type: ignore[no-untyped-def]
    page: Page, live_server, operator, worker, dialogs
) -> None:
    run = services.start_run("t_xss", {"note": PAYLOAD}, user=operator)
    wait_run(run.pk, ("failed",))
    login(page, live_server, "olga", "pw-olga-123")
    for path in (f"/runs/{run.pk}/", "/", f"/runs/compare/?a={run.pk}&b={run.pk}"):
        page.goto(live_server.url + path)
        page.wait_for_timeout(300)
        expect(page.locator("img[src=x]")).to_have_count(0)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator("#step-shout .error-msg")).to_have_text(f"RuntimeError: bad html {PAYLOAD}")
    expect(page.locator(".logs")).to_contain_text(f"about to fail {PAYLOAD}")
    expect(page.locator(".params-list")).to_contain_text(PAYLOAD)
    assert dialogs == []


def test_history_rows_update_and_compare(page: Page, live_server, operator, worker) -> None:  # type: ignore[no-untyped-def]
    first = services.start_run("t_deploy", {"sleep": 0}, user=operator)
    wait_run(first.pk, ("completed",))
    second = services.start_run("t_deploy", {"sleep": 0.5, "note": "slow"}, user=operator)
    login(page, live_server, "olga", "pw-olga-123")
    navigations = count_navigations(page)
    row = page.locator(f"#run-{second.pk}")
    page.check(f"#sel-{first.pk}")
    expect(row).to_contain_text("completed", timeout=TIMEOUT)
    expect(row).to_contain_text("100%")
    assert navigations == []
    expect(page.locator(f"#sel-{first.pk}")).to_be_checked()
    page.check(f"#sel-{second.pk}")
    page.click("text=Compare selected")
    page.wait_for_url(re.compile(rf"/runs/compare/\?a={first.pk}&b={second.pk}$"))
    expect(page.locator("table.compare tr.differs")).to_have_count(2)
    expect(page.locator("table.compare")).to_contain_text("same definition")
