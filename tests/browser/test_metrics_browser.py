"""Step metrics in Chromium: the run page (also while the run moves, without a reload)
and the workflow page's sparklines, against a live server and a real worker."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Page, expect

from runs import services
from runs.models import StepRun
from tests.conftest import wait_run

pytestmark = [
    pytest.mark.django_db(transaction=True),
]

TIMEOUT = 30_000
NAME = "<script>window.pwned = 1</script>"


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("olga", password="pw-olga-123")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    return user


@pytest.fixture
def worker(start_worker):  # type: ignore[no-untyped-def]
    return start_worker("default")


def login(page: Page, live_server, username: str, password: str) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    expect(page.locator(".whoami")).to_contain_text(username)


def test_run_and_workflow_pages_show_metrics(page: Page, live_server, operator, worker) -> None:  # type: ignore[no-untyped-def]
    runs = [services.start_run("t_deploy", {"sleep": 0}, user=operator) for _ in range(3)]
    for i, run in enumerate(runs):
        wait_run(run.pk, ("completed",))
        StepRun.objects.filter(run=run, name="build").update(
            metrics={"rows_written": 1000 * (i + 1), "ratio": 0.25 * (i + 1), NAME: 1}
        )
    login(page, live_server, "olga", "pw-olga-123")

    page.goto(f"{live_server.url}/runs/{runs[-1].pk}/")
    metrics = page.locator("#run-metrics")
    expect(metrics.get_by_role("heading", name="Metrics")).to_be_visible()
    expect(metrics.locator(".metric-group h3")).to_have_text(["build"])
    expect(metrics.locator("dt")).to_have_text([NAME, "ratio", "rows_written"])
    expect(metrics.locator("dd")).to_have_text(["1", "0.75", "3,000"])

    page.goto(f"{live_server.url}/workflows/t_deploy/")
    sparks = page.locator("svg.spark")
    expect(sparks).to_have_count(3)
    rows = page.locator("table.trends tbody tr", has_text="rows_written")
    spark = rows.locator("svg.spark")
    expect(spark).to_be_visible()
    box = spark.bounding_box()
    assert box is not None and (box["width"], box["height"]) == (150, 30)
    expect(spark.locator("circle")).to_have_count(3)
    expect(spark.locator("title")).to_have_text(
        [f"#{runs[0].pk}: 1,000", f"#{runs[1].pk}: 2,000", f"#{runs[2].pk}: 3,000"]
    )
    expect(rows.locator("td.num")).to_have_text(["3,000", "1,000", "3,000"])
    assert page.evaluate("() => window.pwned") is None
    # A point is a link to its run.
    spark.locator("a").first.click()
    page.wait_for_url(re.compile(rf"/runs/{runs[0].pk}/$"))
    expect(page.locator("#run-metrics dd").last).to_have_text("1,000")
    assert page.evaluate("() => window.pwned") is None


def test_metrics_of_a_running_step_appear_without_a_reload(  # type: ignore[no-untyped-def]
    page: Page, live_server, operator, worker
) -> None:
    run = services.start_run("t_cancel", {}, user=operator)
    wait_run(run.pk, ("running",))
    login(page, live_server, "olga", "pw-olga-123")
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator("#step-long_loop")).to_contain_text("running", timeout=TIMEOUT)
    expect(page.locator("#run-metrics")).to_be_empty()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    StepRun.objects.filter(run=run, name="long_loop").update(metrics={"ticks": 1234})
    expect(page.locator("#run-metrics dd")).to_have_text("1,234", timeout=TIMEOUT)
    StepRun.objects.filter(run=run, name="long_loop").update(metrics={"ticks": 5678})
    expect(page.locator("#run-metrics dd")).to_have_text("5,678", timeout=TIMEOUT)
    assert navigations == []
    services.cancel_run(run.pk, user=operator, reason="done")
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=TIMEOUT)
    expect(page.locator("#run-metrics dd")).to_have_text("5,678")
