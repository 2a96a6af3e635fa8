"""Child runs and timeouts in Chromium, against a live server and a real worker: the
parent's page shows its child runs appear and finish without a reload; cancelling the
parent from the page cancels them."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission, User
from playwright.sync_api import Page, expect

from runs import services
from runs.models import Run
from tests.conftest import wait_run

pytestmark = [pytest.mark.django_db(transaction=True)]

TIMEOUT = 30_000


@pytest.fixture
def operator() -> User:
    user = User.objects.create_user("olga", password="pw-olga-123")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    return user


def login(page: Page, live_server) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", "olga")
    page.fill("#id_password", "pw-olga-123")
    page.click("button[type=submit]")
    expect(page.locator(".whoami")).to_contain_text("olga")


def test_the_child_tree_follows_the_children(page: Page, live_server, operator, start_worker):  # type: ignore[no-untyped-def]
    start_worker()
    run = services.start_run("t_parent", {"count": 2, "sleep": 1.5})
    login(page, live_server)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    tree = page.locator("#child-runs")
    expect(page.locator("#step-fan")).to_contain_text("waiting", timeout=TIMEOUT)
    expect(tree.locator("li")).to_have_count(2, timeout=TIMEOUT)
    expect(tree.locator(".badge.s-completed")).to_have_count(2, timeout=TIMEOUT)
    expect(page.locator("#run-status")).to_contain_text("completed", timeout=TIMEOUT)
    expect(page.locator("#step-fan")).to_contain_text("2 of 2 child runs ended")
    assert navigations == []
    child = Run.objects.filter(parent=run).order_by("pk").first()
    tree.locator(f'a[href="/runs/{child.pk}/"]').click()
    expect(page.locator("#parent-run")).to_contain_text(
        f"Child run of #{run.pk}, started by its step fan"
    )


def test_cancel_the_parent_from_the_page(page: Page, live_server, operator, start_worker):  # type: ignore[no-untyped-def]
    start_worker(name="one")
    start_worker(name="two")
    run = services.start_run("t_parent", {"count": 2, "sleep": 30})
    login(page, live_server)
    page.goto(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator("#child-runs .badge.s-running")).to_have_count(2, timeout=TIMEOUT)
    page.click("button[data-action=cancel]")
    page.locator("#action-panel [data-confirm]").click()
    expect(page.locator("#run-status")).to_contain_text("cancelled", timeout=TIMEOUT)
    expect(page.locator("#child-runs .badge.s-cancelled")).to_have_count(2, timeout=TIMEOUT)
    assert [wait_run(c.pk).status for c in Run.objects.filter(parent=run)] == [
        "cancelled",
        "cancelled",
    ]
