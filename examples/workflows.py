"""Demo workflows: each has parameters that make it fail or slow on purpose,
so every button on the dashboard has something to do."""

from __future__ import annotations

import time

from stepflow import Param, Retry, Step, StepContext, StepResult, Workflow, register, step


def _maybe_fail(ctx: StepContext, name: str) -> None:
    if ctx.params.get("fail_at") == name:
        raise RuntimeError(f"{name} failed on purpose (fail_at={name})")


def _work(ctx: StepContext, name: str, seconds: float) -> dict[str, object]:
    ticks = max(1, int(seconds * 10))
    for i in range(ticks):
        ctx.progress(i + 1, ticks, f"{name} {i + 1}/{ticks}")
        time.sleep(seconds / ticks)
    _maybe_fail(ctx, name)
    return {"step": name, "version": ctx.params.get("version")}


# -- deploy: prepare -> build -> template -> deploy ---------------------------------------
@step(weight=1)
def prepare(ctx: StepContext) -> dict[str, object]:
    """Check out the sources."""
    ctx.log("preparing", env=ctx.params["env"])
    ctx.metric("files_checked_out", 1_284)
    return _work(ctx, "prepare", ctx.params["step_seconds"])


@step(depends_on="prepare", weight=3, retry=Retry(max_attempts=2, backoff_base=1))
def build(ctx: StepContext) -> dict[str, object]:
    """Build the images."""
    started = time.monotonic()
    result = _work(ctx, "build", ctx.params["step_seconds"] * 2)
    ctx.metric("build_seconds", round(time.monotonic() - started, 3))
    ctx.metric("image_bytes", 184_549_376 + len(str(ctx.params["version"])) * 4096)
    return result


@step(depends_on="build", weight=1)
def template(ctx: StepContext) -> dict[str, object]:
    """Render the manifests."""
    ctx.metric("manifests", 7)
    return _work(ctx, "template", ctx.params["step_seconds"])


@step("deploy", depends_on="template", weight=2)
def deploy_release(ctx: StepContext) -> dict[str, object]:
    """Apply the manifests."""
    return _work(ctx, "deploy", ctx.params["step_seconds"])


register(
    Workflow(
        "deploy",
        [prepare, build, template, deploy_release],
        description="A deployment pipeline; fail_at makes a chosen step fail.",
        params=[
            Param("env", "choice", default="staging", choices=("staging", "production")),
            Param("version", "str", default="1.0.0", help="Release version"),
            Param(
                "fail_at",
                "choice",
                default="none",
                choices=("none", "prepare", "build", "template", "deploy"),
                help="Make this step fail",
            ),
            Param(
                "step_seconds", "float", default=1.0, min=0, max=60, help="Seconds each step takes"
            ),
        ],
    )
)


# -- dataset: process N items with item checkpoints ---------------------------------------
class ProcessRecords(Step):
    """Process every record once, marking each done; crash_at fails at item k."""

    name = "process"
    weight = 10
    depends_on = ("load",)
    retry = Retry(max_attempts=3, backoff_base=2)

    def execute(self, ctx: StepContext) -> dict[str, int]:
        total = ctx.params["items"]
        crash_at = ctx.params["crash_at"]
        delay = ctx.params["item_delay_ms"] / 1000
        processed = 0
        started = time.monotonic()
        for i in ctx.items(range(total)):
            if crash_at >= 0 and i == crash_at and ctx.attempt == 1:
                raise RuntimeError(f"crashed on purpose at item {i}")
            if delay:
                time.sleep(delay)
            processed += 1
            if processed % 5000 == 0:
                ctx.progress(len(ctx.done_items()), total, f"{i + 1} of {total}")
        ctx.progress(total, total, "done")
        ctx.metric("processed", processed)
        elapsed = time.monotonic() - started
        ctx.metric("items_per_second", round(processed / elapsed) if elapsed > 0 else processed)
        return {"processed_this_attempt": processed}


@step(weight=1)
def load(ctx: StepContext) -> dict[str, int]:
    """Count the records."""
    ctx.metric("records", ctx.params["items"])
    return {"items": ctx.params["items"]}


@step(depends_on="process", weight=1)
def report(ctx: StepContext) -> dict[str, object]:
    """Summarize."""
    return {"done": True}


register(
    Workflow(
        "dataset",
        [load, ProcessRecords(), report],
        description="Processes N records with item checkpoints; crash_at fails once at item k.",
        params=[
            Param("items", "int", default=200_000, min=1, max=5_000_000),
            Param(
                "crash_at",
                "int",
                default=-1,
                help="Fail the first attempt at this item (-1: never)",
            ),
            Param("item_delay_ms", "float", default=0.0, min=0, max=1000),
        ],
    )
)


# -- upload: validate -> upload -> finalize, rolled back on failure -----------------------
def _undo_upload(ctx: StepContext, result: StepResult) -> None:
    files = (result.rollback_data or {}).get("files", [])
    ctx.log(f"deleted {len(files)} uploaded file(s)", files=files)


@step(weight=1)
def validate(ctx: StepContext) -> None:
    """Validate the files."""
    if ctx.params["files"] < 1:
        raise ValueError("nothing to upload")


@step(depends_on="validate", weight=3, rollback=_undo_upload)
def upload(ctx: StepContext) -> StepResult:
    """Upload the files."""
    names = [f"file-{i}.bin" for i in range(ctx.params["files"])]
    for i, _ in enumerate(ctx.items(names, key=str)):
        ctx.progress(i + 1, len(names))
        time.sleep(0.05)
    ctx.metric("files", len(names))
    ctx.metric("bytes", len(names) * 1_048_576)
    return StepResult(data={"uploaded": len(names)}, rollback_data={"files": names})


@step(depends_on="upload", weight=1)
def finalize(ctx: StepContext) -> None:
    """Publish the upload."""
    if ctx.params["fail_finalize"]:
        raise RuntimeError("finalize failed on purpose: the uploaded files are rolled back")


register(
    Workflow(
        "upload",
        [validate, upload, finalize],
        description="Uploads files; a failed finalize rolls the upload back.",
        params=[
            Param("files", "int", default=5, min=0, max=1000),
            Param("fail_finalize", "bool", default=False),
        ],
    )
)


# -- branches: parallel branches, a condition with an else path, timeout, retries ---------
@step()
def fetch(ctx: StepContext) -> dict[str, bool]:
    """Fetch the inputs."""
    return {"big": ctx.params["size"] > 100}


@step(depends_on="fetch", when=lambda ctx: ctx.inputs["fetch"]["big"])
def big_path(ctx: StepContext) -> dict[str, str]:
    """Runs when the input is big."""
    time.sleep(0.5)
    return {"path": "big"}


@step(depends_on="fetch", when=lambda ctx: not ctx.inputs["fetch"]["big"])
def small_path(ctx: StepContext) -> dict[str, str]:
    """Runs otherwise (the else path)."""
    return {"path": "small"}


@step(depends_on="fetch", retry=Retry(max_attempts=3, backoff_base=1, backoff_factor=2))
def flaky(ctx: StepContext) -> dict[str, int]:
    """Fails its first attempts (flaky_failures), then succeeds."""
    if ctx.attempt <= ctx.params["flaky_failures"]:
        raise ConnectionError(f"flaky network, attempt {ctx.attempt}")
    return {"attempts": ctx.attempt}


@step(depends_on="fetch", timeout=2.0, retry=Retry(max_attempts=2, backoff_base=1))
def slow(ctx: StepContext) -> None:
    """Times out when slow_seconds is over 2."""
    time.sleep(ctx.params["slow_seconds"])


@step(depends_on=["big_path", "small_path", "flaky", "slow"])
def join(ctx: StepContext) -> dict[str, object]:
    """Joins the branches."""
    path = (ctx.inputs.get("big_path") or ctx.inputs.get("small_path") or {}).get("path")
    return {"path": path}


register(
    Workflow(
        "branches",
        [fetch, big_path, small_path, flaky, slow, join],
        description="Parallel branches, a condition with an else path, a timeout and retries.",
        params=[
            Param("size", "int", default=10),
            Param("flaky_failures", "int", default=1, min=0, max=5),
            Param("slow_seconds", "float", default=0.5, min=0, max=30),
        ],
    )
)


# -- payment: started with an idempotency key -----------------------------------------------
@step()
def authorize(ctx: StepContext) -> dict[str, object]:
    """Authorize the amount."""
    return {"authorized": ctx.params["amount"]}


@step(depends_on="authorize")
def capture(ctx: StepContext) -> dict[str, object]:
    """Capture the payment (once: the run is keyed by an idempotency key)."""
    ctx.checkpoint("captured", ctx.params["amount"])
    ctx.metric("amount", ctx.params["amount"])
    return {"captured": ctx.params["amount"]}


register(
    Workflow(
        "payment",
        [authorize, capture],
        description="A payment-like job: start it with an idempotency key to make it once-only.",
        params=[
            Param("amount", "float", required=True, min=0.01),
            Param("currency", "choice", default="EUR", choices=("EUR", "USD", "GBP")),
            Param("card_token", "str", default="", secret=True),
        ],
    )
)


# -- regions: one child run of "region" per region, waited for without a worker ----------
@step(weight=1)
def extract(ctx: StepContext) -> dict[str, object]:
    """Pull one region's rows."""
    rows = 1000 * (1 + len(ctx.params["region"]))
    _work(ctx, "extract", ctx.params["seconds"])
    ctx.metric("rows", rows)
    return {"rows": rows}


@step(depends_on="extract", weight=2)
def summarize(ctx: StepContext) -> dict[str, object]:
    """Summarize the region."""
    if ctx.params["region"] == ctx.params["fail_region"]:
        raise RuntimeError(f"region {ctx.params['region']} failed on purpose (fail_region)")
    _work(ctx, "summarize", ctx.params["seconds"])
    return {"region": ctx.params["region"], "rows": ctx.inputs["extract"]["rows"]}


register(
    Workflow(
        "region",
        [extract, summarize],
        description="One region's report (started as a child run by regions).",
        params=[
            Param("region", "str", required=True),
            Param("seconds", "float", default=1.0, min=0, max=60),
            Param("fail_region", "str", default=""),
        ],
        timeout=300,
    )
)


@step(weight=1)
def fan_out(ctx: StepContext) -> dict[str, object]:
    """Start one child run per region; the step then waits for them."""
    regions = [r.strip() for r in ctx.params["regions"].split(",") if r.strip()]
    for region in regions:
        ctx.start_child(
            "region",
            {
                "region": region,
                "seconds": ctx.params["seconds"],
                "fail_region": ctx.params["fail_region"],
            },
        )
    ctx.log(f"started {len(regions)} child runs")
    return {"regions": regions}


@step(depends_on="fan_out", weight=1)
def combine(ctx: StepContext) -> dict[str, object]:
    """Add up what the child runs found."""
    children = ctx.inputs["fan_out"]["children"]
    rows = sum(c["outputs"]["summarize"]["rows"] for c in children)
    ctx.metric("rows", rows)
    return {"regions": len(children), "rows": rows}


register(
    Workflow(
        "regions",
        [fan_out, combine],
        description="Nested runs: a child run per region, combined when all are done; "
        "fail_region makes one child fail (resume the parent once it is fixed). "
        "Times out after 10 minutes.",
        params=[
            Param("regions", "str", default="eu,us,asia"),
            Param("seconds", "float", default=2.0, min=0, max=60),
            Param("fail_region", "str", default="", help="This region's child run fails"),
        ],
        timeout=600,
    )
)
