"""A workflow whose step logs and fails with an HTML payload (for the browser tests)."""

from __future__ import annotations

from stepflow import StepContext, Workflow, register, step

PAYLOAD = "<img src=x onerror=alert(1)>"


@step()
def shout(ctx: StepContext) -> None:
    ctx.log(f"about to fail {PAYLOAD}", payload=PAYLOAD)
    raise RuntimeError(f"bad html {PAYLOAD}")


register(Workflow("t_xss", [shout]), replace=True)
