"""Step metrics on the pages: the run page (full and polled), compare, and the
workflow page's sparklines; exact values, escaping, and fixed query counts."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission, User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from runs.models import Run, StepRun
from runs.ui.charts import metric_text
from runs.ui.compare import MetricRow
from tests.integration.test_views import POLL_URL, make_run

pytestmark = [pytest.mark.django_db]

NAME = "<script>x</script>"
NAME_ESCAPED = "&lt;script&gt;x&lt;/script&gt;"
SPARK = re.compile(r'<svg class="spark".*?</svg>', re.S)


@pytest.fixture
def op_client() -> Client:
    user = User.objects.create_user("olga", password="pw-olga-123")
    user.user_permissions.add(Permission.objects.get(codename="operate_run"))
    c = Client()
    c.force_login(user)
    return c


def set_metrics(run: Run, step: str, metrics: dict) -> None:
    StepRun.objects.filter(run=run, name=step).update(metrics=metrics)


def queries(client: Client, url: str, headers: dict | None = None) -> int:
    with CaptureQueriesContext(connection) as ctx:
        assert client.get(url, headers=headers or {}).status_code in (200, 286)
    return len(ctx.captured_queries)


# -- formatting ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1204.0, "1,204"),
        (-1204, "-1,204"),
        (0.0, "0"),
        (1048576.0, "1,048,576"),
        (3.14159265, "3.1416"),
        (12345.678, "12,345.678"),
        (2.5, "2.5"),
        (2.99999, "3"),
        (0.000123456, "0.0001235"),
        (0.30000000000000004, "0.3"),
        (1.23456e-7, "1.235e-07"),
        (float("inf"), "∞"),
        ("n/a", "n/a"),
    ],
)
def test_metric_text(value: object, text: str) -> None:
    assert metric_text(value) == text


# -- run page -----------------------------------------------------------------------------
def test_run_page__metrics_per_step_in_order_formatted_and_escaped(op_client: Client) -> None:
    run = make_run("t_deploy", "completed")
    set_metrics(run, "deploy", {NAME: 2.5})
    set_metrics(run, "build", {"rows_written": 1204, "bytes": 1048576.0, "ratio": 3.14159265})
    body = op_client.get(f"/runs/{run.pk}/").content.decode()
    section = body.split('<div id="run-metrics">')[1].split('<div class="detail-grid">')[0]
    groups = re.findall(r'<h3 class="step-name">(.*?)</h3>', section)
    assert groups == ["build", "deploy"]
    values = re.findall(r"<div><dt>(.*?)</dt><dd class=\"num\">(.*?)</dd></div>", section)
    assert values == [
        ("bytes", "1,048,576"),
        ("ratio", "3.1416"),
        ("rows_written", "1,204"),
        (NAME_ESCAPED, "2.5"),
    ]
    assert NAME not in body


def test_run_page__no_metrics_no_section(op_client: Client) -> None:
    run = make_run("t_deploy", "completed")
    body = op_client.get(f"/runs/{run.pk}/").content.decode()
    assert '<div id="run-metrics"></div>' in body
    assert "Metrics" not in body


def test_run_page__metrics_cost_one_query_whatever_the_steps(op_client: Client) -> None:
    small = make_run("t_deploy", "completed", steps=3)
    big = make_run("t_deploy", "completed", steps=30)
    plain = make_run("t_deploy", "completed", steps=30)
    for run in (small, big):
        StepRun.objects.filter(run=run).update(metrics={"rows": 1, "bytes": 2.5})
    counts = [queries(op_client, f"/runs/{r.pk}/") for r in (small, big, plain)]
    assert counts[0] == counts[1] == counts[2]
    body = op_client.get(f"/runs/{big.pk}/").content.decode()
    assert body.count('<div class="metric-group">') == 30


def test_live_region__carries_the_metrics(op_client: Client) -> None:
    run = make_run("t_deploy", "running", steps=2)
    set_metrics(run, "s1", {"rows": 12000})
    live = {"HX-Request": "true", "HX-Target": "run-live"}
    body = op_client.get(f"/runs/{run.pk}/", headers=live).content.decode()
    assert '<div><dt>rows</dt><dd class="num">12,000</dd></div>' in body


def test_poll__a_moving_step_with_metrics_sends_them_again(op_client: Client) -> None:
    run = make_run("t_deploy", "running", steps=30)
    set_metrics(run, "s3", {"rows": 10})
    url = POLL_URL.search(op_client.get(f"/runs/{run.pk}/").content.decode()).group(1)
    StepRun.objects.filter(run=run, name="s3").update(progress_current=7, metrics={"rows": 7500})
    body = op_client.get(url.replace("&amp;", "&"), headers={"HX-Request": "true"}).content.decode()
    assert '<div id="run-metrics" hx-swap-oob="innerHTML">' in body
    metrics = body.split('<div id="run-metrics" hx-swap-oob="innerHTML">')[1]
    assert '<h3 class="step-name">s3</h3>' in metrics
    assert '<div><dt>rows</dt><dd class="num">7,500</dd></div>' in metrics


def test_poll__steps_without_metrics_moving_do_not_send_them(op_client: Client) -> None:
    run = make_run("t_deploy", "running", steps=5)
    StepRun.objects.filter(run=run).exclude(name="s4").update(status="completed")
    set_metrics(run, "s0", {"rows": 10})
    url = POLL_URL.search(op_client.get(f"/runs/{run.pk}/").content.decode()).group(1)
    StepRun.objects.filter(run=run, name="s4").update(progress_current=9)
    body = op_client.get(url.replace("&amp;", "&"), headers={"HX-Request": "true"}).content.decode()
    assert re.findall(r'<tbody class="step" id="(step-[^"]+)"', body) == ["step-s4"]
    assert "run-metrics" not in body


# -- compare ------------------------------------------------------------------------------
def test_compare__metrics_table_with_differences(op_client: Client) -> None:
    a = make_run("t_deploy", "completed")
    b = make_run("t_deploy", "completed")
    set_metrics(a, "build", {"rows": 1000, "ratio": 0.5, "only_a": 1, "lat": 8, NAME: 1})
    set_metrics(b, "build", {"rows": 1250, "ratio": 0.5, "only_b": 2.5, "lat": 7, NAME: 2})
    set_metrics(a, "deploy", {"zero": 0})
    set_metrics(b, "deploy", {"zero": 3})
    response = op_client.get(f"/runs/compare/?a={a.pk}&b={b.pk}")
    assert response.status_code == 200
    by_step = {s.name: s.metrics for s in response.context["steps"].with_metrics}
    assert by_step == {
        "build": [
            MetricRow(NAME, "1", "2", "+1", "+100%"),
            MetricRow("lat", "8", "7", "-1", "-12.5%"),
            MetricRow("only_a", "1", "—", "—", ""),
            MetricRow("only_b", "—", "2.5", "—", ""),
            MetricRow("ratio", "0.5", "0.5", "0", "0%"),
            MetricRow("rows", "1,000", "1,250", "+250", "+25%"),
        ],
        "deploy": [MetricRow("zero", "0", "3", "+3", "")],
    }
    body = response.content.decode()
    table = body.split('<table class="compare compare-metrics"')[1]
    assert (
        '<td>rows</td>\n      <td class="num">1,000</td>\n      <td class="num">1,250</td>\n'
        '      <td class="num">+250 <span class="muted">(+25%)</span></td></tr>'
    ) in table
    assert (
        '<td>only_a</td>\n      <td class="num">1</td>\n      <td class="num muted">—</td>\n'
        '      <td class="num muted">—</td></tr>'
    ) in table
    assert f"<td>{NAME_ESCAPED}</td>" in table
    assert NAME not in body


def test_compare__no_metrics_no_table(op_client: Client) -> None:
    a = make_run("t_deploy", "completed")
    b = make_run("t_deploy", "completed")
    body = op_client.get(f"/runs/compare/?a={a.pk}&b={b.pk}").content.decode()
    assert "compare-metrics" not in body and "Metrics" not in body


# -- workflow page ------------------------------------------------------------------------
def test_workflow_page__sparklines_of_the_last_30_runs(op_client: Client) -> None:
    runs = [make_run("t_deploy", "completed") for _ in range(33)]
    for i, run in enumerate(runs):
        set_metrics(run, "build", {"rows": 1000 + i, NAME: 0.5})
    set_metrics(runs[-1], "deploy", {"bytes": 2048})
    make_run("t_deploy", "failed", step_error="E: x")  # the newest: no metrics
    other = make_run("t_retry", "completed", steps=1)
    set_metrics(other, "s0", {"elsewhere": 1})
    response = op_client.get("/workflows/t_deploy/")
    trends = [(t.step, t.metric, len(t.spark.points)) for t in response.context["trends"]]
    # The newest run has none: the 29 runs before it (#4 to #32 of 33) are drawn.
    assert trends == [("build", NAME, 29), ("build", "rows", 29), ("deploy", "bytes", 1)]
    rows = response.context["trends"][1].spark
    assert (rows.last, rows.low, rows.high) == ("1,032", "1,004", "1,032")
    assert [p.run_id for p in rows.points] == [r.pk for r in runs[4:]]

    body = response.content.decode()
    assert "Metrics across recent runs" in body
    svgs = SPARK.findall(body)
    assert [s.count("<circle ") for s in svgs] == [29, 29, 1]
    assert svgs[1].count(" spark-last") == 1
    newest = runs[-1].pk
    assert (
        f'<a href="/runs/{newest}/"><title>#{newest}: 1,032</title>' in svgs[1]
        and f"<title>#{runs[4].pk}: 1,004</title>" in svgs[1]
    )
    assert 'aria-label="rows of build: 29 runs, last 1,032, min 1,004, max 1,032"' in svgs[1]
    assert f'aria-label="{NAME_ESCAPED} of build: 29 runs, last 0.5' in svgs[0]
    assert (
        '<td class="num">1,032</td><td class="num muted">1,004</td><td class="num muted">1,032</td>'
    ) in body
    groups = re.findall(r'<tr class="section"><th scope="rowgroup" colspan="5">(.*?)</th>', body)
    assert groups == ["build", "deploy"]
    assert f'<tr><th scope="row">{NAME_ESCAPED}</th>' in body
    assert NAME not in body and "elsewhere" not in body


def test_workflow_page__one_query_for_the_metrics(op_client: Client) -> None:
    make_run("t_deploy", "completed")
    few = queries(op_client, "/workflows/t_deploy/")
    for i in range(10):
        run = make_run("t_deploy", "completed")
        StepRun.objects.filter(run=run).update(metrics={"rows": i, "bytes": i * 2})
    assert queries(op_client, "/workflows/t_deploy/") == few


def test_workflow_page__no_metrics_no_section(op_client: Client) -> None:
    make_run("t_deploy", "completed")
    body = op_client.get("/workflows/t_deploy/").content.decode()
    assert "Metrics across recent runs" not in body and '<svg class="spark"' not in body
