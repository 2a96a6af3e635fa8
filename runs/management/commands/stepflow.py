"""``manage.py stepflow``: operate workflows and runs from the terminal."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from argparse import ArgumentParser
from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone

from runs import services
from runs.models import Run, RunStatus
from stepflow.errors import StepflowError
from stepflow.params import mask_params
from stepflow.registry import registry
from stepflow.states import RUN_FINISHED, STATUS_ICONS


def parse_param(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise CommandError(f"--param takes key=value, not {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), value


class Command(BaseCommand):
    help = (
        "Operate stepflow workflows and runs: workflows, run, resume, cancel, status, history, "
        "cleanup, worker, recover, schedules, schedule, queues, queue-limit, token."
    )

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
        sub.add_parser("workflows", help="List registered workflows")

        p = sub.add_parser("run", help="Start a run of a workflow")
        p.add_argument("workflow")
        p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--idempotency-key")
        p.add_argument("--wait", action="store_true", help="Follow the run until it finishes")
        g = p.add_mutually_exclusive_group()
        g.add_argument(
            "--resume",
            action="store_true",
            help="Resume the latest failed or cancelled run with the same parameters, if any",
        )
        g.add_argument(
            "--retry-failed", action="store_true", help="Like --resume, retrying failed steps"
        )
        g.add_argument(
            "--continue-from", metavar="STEP", help="Like --resume, continuing from STEP"
        )

        p = sub.add_parser("resume", help="Resume a stopped run")
        p.add_argument("run_id", type=int)
        g = p.add_mutually_exclusive_group()
        g.add_argument("--retry-failed", action="store_true")
        g.add_argument("--continue-from", metavar="STEP")
        g.add_argument("--only", metavar="STEP")
        p.add_argument("--skip", action="append", default=[], metavar="STEP")
        p.add_argument("--confirm-definition-change", action="store_true")
        p.add_argument("--clear-items", action="store_true")
        p.add_argument("--wait", action="store_true")

        p = sub.add_parser("cancel", help="Cancel an active run")
        p.add_argument("run_id", type=int)
        p.add_argument("--reason", default="")

        p = sub.add_parser("status", help="Show a run and its steps")
        p.add_argument("run_id", type=int)

        p = sub.add_parser("history", help="List recent runs")
        p.add_argument("--workflow")
        p.add_argument("--status", choices=[s.value for s in RunStatus])
        p.add_argument("--limit", type=int, default=20)

        p = sub.add_parser("cleanup", help="Delete finished runs older than N days")
        p.add_argument("--older-than", type=float, required=True, metavar="DAYS")

        p = sub.add_parser("worker", help="Start a worker (with the scheduler and recovery)")
        p.add_argument("queues", nargs="*", default=["default"])
        p.add_argument(
            "--simple", action="store_true", help="Run jobs in the worker process (no fork)"
        )
        p.add_argument("--burst", action="store_true", help="Stop when the queues are empty")
        p.add_argument("--name")
        p.add_argument("--no-recovery", action="store_true")

        sub.add_parser("recover", help="Reap lost attempts and re-enqueue lost jobs now")

        sub.add_parser("schedules", help="List schedules")
        p = sub.add_parser("schedule", help="Add, enable, disable or delete a schedule")
        ssub = p.add_subparsers(dest="schedule_action", required=True, metavar="ACTION")
        p = ssub.add_parser("add", help="Start WORKFLOW at every tick of CRON")
        p.add_argument("name")
        p.add_argument("workflow")
        p.add_argument("cron", help="quoted: '30 2 * * *', or a macro such as @daily")
        p.add_argument("--tz", default="UTC", help="IANA time zone of the cron (default UTC)")
        p.add_argument("--param", "-p", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--disabled", action="store_true", help="Create it disabled")
        p.add_argument("--note", default="")
        for verb in ("enable", "disable", "delete"):
            ssub.add_parser(verb, help=f"{verb.title()} a schedule").add_argument("name")

        sub.add_parser("queues", help="Queue limits, and the steps active and waiting per queue")
        p = sub.add_parser("queue-limit", help="Limit a queue across all runs, or remove its limit")
        p.add_argument("queue")
        p.add_argument("limit", help="steps at once (0 holds the queue), or 'none'")
        p.add_argument("--note", default="")

        p = sub.add_parser("token", help="Create a JSON API token for a user")
        p.add_argument("username")
        p.add_argument("--name", default="", help="What the token is for")

    def handle(self, *args: Any, **opts: Any) -> None:
        action = opts["action"].replace("-", "_")
        try:
            getattr(self, f"do_{action}")(opts)
        except StepflowError as exc:
            raise CommandError(exc.message) from None

    # -- actions ------------------------------------------------------------------
    def do_workflows(self, opts: dict[str, Any]) -> None:
        if not len(registry):
            self.stdout.write("No workflows are registered.")
        for wf in registry:
            self.stdout.write(f"{wf.name}  v{wf.version}  {len(wf)} steps  {wf.description}")
            for level in wf.levels():
                self.stdout.write("    " + "  |  ".join(level))

    def do_run(self, opts: dict[str, Any]) -> None:
        params = dict(parse_param(p) for p in opts["param"])
        mode, step = None, None
        if opts["resume"]:
            mode = "resume"
        elif opts["retry_failed"]:
            mode = "retry_failed"
        elif opts["continue_from"]:
            mode, step = "continue_from", opts["continue_from"]
        if mode is not None:
            latest = services.latest_unfinished(opts["workflow"], params)
            if latest is not None:
                plan = services.resume_run(latest.pk, mode, step=step, origin="cli")
                self.stdout.write(f"Resumed run #{latest.pk} ({latest.status}). {plan.summary()}")
                if opts["wait"]:
                    self.follow(latest.pk)
                return
            self.stdout.write(
                f"No failed, cancelled or timed-out run of {opts['workflow']} "
                "with these parameters; starting a new one."
            )
        run = services.start_run(
            opts["workflow"], params, idempotency_key=opts["idempotency_key"], origin="cli"
        )
        if getattr(run, "created", True):
            self.stdout.write(f"Started run #{run.pk} of {run.workflow}")
        else:
            self.stdout.write(
                f"Run #{run.pk} already exists for that idempotency key ({run.status})"
            )
        if opts["wait"]:
            self.follow(run.pk)

    def do_resume(self, opts: dict[str, Any]) -> None:
        mode, step = "resume", None
        if opts["retry_failed"]:
            mode = "retry_failed"
        elif opts["continue_from"]:
            mode, step = "continue_from", opts["continue_from"]
        elif opts["only"]:
            mode, step = "only", opts["only"]
        plan = services.resume_run(
            opts["run_id"],
            mode,
            step=step,
            skip=opts["skip"],
            origin="cli",
            confirm_definition_change=opts["confirm_definition_change"],
            clear_items=opts["clear_items"],
        )
        self.stdout.write(f"Run #{opts['run_id']} resumed. {plan.summary()}")
        if opts["wait"]:
            self.follow(opts["run_id"])

    def do_cancel(self, opts: dict[str, Any]) -> None:
        run = services.cancel_run(opts["run_id"], reason=opts["reason"], origin="cli")
        self.stdout.write(f"Run #{run.pk} is {run.status}")

    def do_status(self, opts: dict[str, Any]) -> None:
        run = services.get_run(opts["run_id"])
        self.print_run(run)

    def do_history(self, opts: dict[str, Any]) -> None:
        qs = Run.objects.all()
        if opts["workflow"]:
            qs = qs.filter(workflow=opts["workflow"])
        if opts["status"]:
            qs = qs.filter(status=opts["status"])
        if opts["limit"] < 1:
            raise CommandError("--limit must be at least 1")
        rows = list(qs.order_by("-id")[: opts["limit"]])
        if not rows:
            self.stdout.write("No runs.")
        for r in rows:
            when = timezone.localtime(r.created_at).strftime("%Y-%m-%d %H:%M:%S")
            self.stdout.write(
                f"#{r.pk:<6} {r.workflow:<20} {STATUS_ICONS.get(r.status, '')} {r.status:<10} "
                f"{r.progress * 100:5.1f}%  {when}  {r.error_summary}"
            )

    def do_queues(self, opts: dict[str, Any]) -> None:
        from runs import engine
        from runs.models import QueueLimit

        limits = dict(QueueLimit.objects.values_list("queue", "limit"))
        usage = engine.queue_usage()
        names = sorted(set(limits) | set(usage))
        if not names:
            self.stdout.write("No queue limits, and no steps active or waiting.")
        for name in names:
            active, waiting = usage.get(name, (0, 0))
            limit = limits.get(name)
            self.stdout.write(
                f"{name:<20} limit {'none' if limit is None else limit:<5} "
                f"active {active:<5} waiting {waiting}"
            )

    def do_queue_limit(self, opts: dict[str, Any]) -> None:
        from runs import engine
        from runs.models import QueueLimit

        name = opts["queue"].strip()
        if not name or len(name) > 100:
            raise CommandError("A queue name is 1 to 100 characters")
        raw = opts["limit"].strip().lower()
        if raw == "none":
            deleted, _ = QueueLimit.objects.filter(queue=name).delete()
            message = (
                f"Removed the limit of queue {name}" if deleted else f"Queue {name} had no limit"
            )
        else:
            try:
                limit = int(raw)
            except ValueError:
                raise CommandError(
                    f"The limit must be a whole number >= 0 or 'none', not {opts['limit']!r}"
                ) from None
            if limit < 0:
                raise CommandError(
                    f"The limit must be a whole number >= 0 or 'none', not {opts['limit']!r}"
                )
            QueueLimit.objects.update_or_create(
                queue=name, defaults={"limit": limit, "note": opts["note"]}
            )
            message = f"Queue {name}: at most {limit} step(s) of all runs at once"
        engine.forget_queue_limits()
        started = engine.dispatch_queue(name, actor="cli")
        if started:
            message += f"; {len(started)} waiting step(s) started"
        self.stdout.write(message)

    def do_cleanup(self, opts: dict[str, Any]) -> None:
        days = opts["older_than"]
        if days < 0:
            raise CommandError("--older-than must not be negative")
        cutoff = timezone.now() - timedelta(days=days)
        qs = Run.objects.filter(status__in=list(RUN_FINISHED), created_at__lt=cutoff)
        count = qs.count()
        qs.delete()
        self.stdout.write(f"Deleted {count} finished run(s) older than {days:g} day(s)")

    def do_token(self, opts: dict[str, Any]) -> None:
        from django.contrib.auth import get_user_model

        from runs.api import new_token

        user = get_user_model().objects.filter(username=opts["username"]).first()
        if user is None:
            raise CommandError(f"No user named {opts['username']!r}")
        token = new_token(user, opts["name"])
        self.stdout.write(f"API token for {user.get_username()} (shown once): {token}")

    def do_recover(self, opts: dict[str, Any]) -> None:
        from runs.recovery import recover

        self.stdout.write(str(recover()))

    def do_worker(self, opts: dict[str, Any]) -> None:
        from django.db import connections

        from runs import jobs  # noqa: F401  (imported before forking)
        from runs.queue import get_queue
        from runs.worker import (
            RecoveryThread,
            SchedulerThread,
            StepflowSimpleWorker,
            StepflowWorker,
        )

        queues = [get_queue(q) for name in opts["queues"] for q in name.split(",") if q]
        cls = StepflowSimpleWorker if opts["simple"] else StepflowWorker
        name = opts["name"] or f"{socket.gethostname()}.{os.getpid()}"
        worker = cls(queues, connection=queues[0].connection, name=name)
        recovery = None
        if not opts["no_recovery"]:
            recovery = RecoveryThread(queues[0].connection)
            recovery.start()
        scheduler = SchedulerThread()
        scheduler.start()
        connections.close_all()
        try:
            worker.work(burst=opts["burst"], with_scheduler=True, logging_level="WARNING")
        finally:
            scheduler.stopping.set()
            if recovery is not None:
                recovery.stopping.set()

    def do_schedules(self, opts: dict[str, Any]) -> None:
        from runs import schedules
        from runs.models import Schedule

        rows = list(Schedule.objects.order_by("name"))
        if not rows:
            self.stdout.write("No schedules.")
        for s in rows:
            state = "enabled" if s.enabled else "disabled"
            params = json.dumps(schedules.masked_params(s), sort_keys=True, ensure_ascii=False)
            line = (
                f"{s.name:<20} {s.workflow:<20} {s.cron:<16} {s.timezone:<16} {state:<8}  "
                f"next {schedules.local_time(s.next_run_at, s.timezone)}  "
                f"last {schedules.local_time(s.last_run_at, s.timezone)}  params {params}"
            )
            problem = schedules.problem(s) if s.enabled else ""
            if problem:
                line += f"  ⚠ cannot start: {problem}"
            self.stdout.write(line)

    def do_schedule(self, opts: dict[str, Any]) -> None:
        from runs import schedules

        verb = opts["schedule_action"]
        if verb == "add":
            s = schedules.save_schedule(
                opts["name"],
                opts["workflow"],
                opts["cron"],
                opts["tz"],
                dict(parse_param(p) for p in opts["param"]),
                enabled=not opts["disabled"],
                note=opts["note"],
            )
            when = schedules.local_time(s.next_run_at, s.timezone)
            self.stdout.write(
                f"Created schedule {s.name} ({s.workflow}, {s.cron}, {s.timezone}); "
                + (f"next run {when}" if s.enabled else "disabled")
            )
        elif verb == "enable":
            s = schedules.set_enabled(opts["name"], True)
            when = schedules.local_time(s.next_run_at, s.timezone)
            self.stdout.write(f"Schedule {s.name} enabled; next run {when}")
        elif verb == "disable":
            s = schedules.set_enabled(opts["name"], False)
            self.stdout.write(f"Schedule {s.name} disabled")
        else:
            name, kept = schedules.delete_schedule(opts["name"])
            self.stdout.write(f"Deleted schedule {name} (the {kept} run(s) it started are kept)")

    # -- output -------------------------------------------------------------------
    def print_run(self, run: Run) -> None:
        try:
            declared = registry.get(run.workflow).params
        except StepflowError:
            declared = {}
        self.stdout.write(
            f"Run #{run.pk} {run.workflow}  {STATUS_ICONS.get(run.status, '')} {run.status}  "
            f"{run.progress * 100:.0f}%  attempt {run.attempt}"
        )
        params = mask_params(declared, run.params)
        if params:
            self.stdout.write("  params: " + json.dumps(params, sort_keys=True))
        if run.error_summary:
            self.stdout.write(f"  error: {run.error_summary}")
        if run.parent_id:
            self.stdout.write(f"  child of run #{run.parent_id}")
        if run.deadline and run.status not in RUN_FINISHED:
            deadline = timezone.localtime(run.deadline).strftime("%Y-%m-%d %H:%M:%S")
            self.stdout.write(f"  deadline: {deadline}")
        for s in run.steps.all():
            extra = ""
            if s.progress_total:
                extra = f"  {s.progress_current or 0:g}/{s.progress_total:g}"
            if s.items_done:
                extra += f"  items {s.items_done}"
            if s.error and s.status in ("failed", "timed_out", "retrying"):
                extra += f"  {s.error.strip().splitlines()[-1]}"
            if s.skip_reason and s.status == "skipped":
                extra += f"  ({s.skip_reason})"
            if s.progress_message and s.status in ("pending", "waiting"):
                extra += f"  {s.progress_message}"
            self.stdout.write(
                f"  {STATUS_ICONS.get(s.status, '')} {s.name:<20} {s.status:<10} "
                f"{s.attempts} attempt(s){extra}"
            )
        for child in run.children.order_by("pk"):
            self.stdout.write(
                f"  child run #{child.pk} {child.workflow}  "
                f"{STATUS_ICONS.get(child.status, '')} {child.status}  {child.progress * 100:.0f}%"
            )

    def follow(self, run_id: int) -> None:
        last = None
        interactive = sys.stdout.isatty()
        while True:
            run = Run.objects.get(pk=run_id)
            steps = list(run.steps.all())
            current = next(
                (s.name for s in steps if s.status in ("running", "retrying", "queued")), ""
            )
            bar = "█" * int(run.progress * 30) + "░" * (30 - int(run.progress * 30))
            line = f"#{run.pk} {bar} {run.progress * 100:5.1f}%  {run.status}  {current}"
            if line != last:
                if interactive:
                    self.stdout.write("\r" + line, ending="")
                else:
                    self.stdout.write(line)
                last = line
            if run.status in RUN_FINISHED:
                break
            time.sleep(0.5)
        if interactive:
            self.stdout.write("")
        self.print_run(run)
        if run.status == RunStatus.FAILED:
            failed = run.steps.filter(name=run.failed_step).first()
            if failed is not None and failed.error:
                self.stdout.write(f"\n{failed.name} failed: {failed.error}")
            self.stdout.write("\nTo resume:")
            self.stdout.write(f"  python manage.py stepflow resume {run.pk} --retry-failed")
            if run.failed_step:
                self.stdout.write(
                    f"  python manage.py stepflow resume {run.pk} --continue-from {run.failed_step}"
                )
            raise CommandError(f"Run #{run.pk} failed")
        if run.status == RunStatus.CANCELLED:
            self.stdout.write(f"\nTo resume:\n  python manage.py stepflow resume {run.pk}")
        if run.status == RunStatus.TIMED_OUT:
            self.stdout.write(f"\nTo resume:\n  python manage.py stepflow resume {run.pk}")
            raise CommandError(f"Run #{run.pk} timed out")
