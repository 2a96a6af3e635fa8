"""A stateful property test of recovery: Hypothesis drives start / complete /
fail / kill / resume / retry / cancel against the real services, real
PostgreSQL, real Redis and real worker processes, and after every action
checks what the database says:

- a step never has two running attempts, and a running attempt is its latest
  (the step is running exactly when its latest attempt is);
- attempt numbers are 1..n without gaps or duplicates, and a finished
  attempt's outcome never changes;
- nothing leaves a terminal state except through a reset (a ``resumed`` event
  not seen before, naming the step);
- a finished run has no active step; the step body ran at most once per
  attempt and at least once per attempt that recorded an outcome;
- once the faults stop, every run reaches a terminal state.

STEPFLOW_CHAOS_EXAMPLES (default 5) and STEPFLOW_CHAOS_STEPS (default 12)
make it run longer.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psutil
import pytest
from django.db import connection, transaction
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from runs import services
from runs.models import Run, RunEvent, StepAttempt, StepRun
from stepflow.errors import StepflowError
from stepflow.states import RUN_FINISHED, STEP_ACTIVE, STEP_FINISHED
from tests.conftest import WorkerProcess
from tests.workflows import CHAOS_MODES, chaos_key

# Row locks held from the test, REPEATABLE READ snapshots: PostgreSQL by nature.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

STEPS = ("fetch", "left", "right", "merge")
MAX_RUNS = 4
#: Once the faults stop, every run must be terminal within this many seconds.
SETTLE_TIMEOUT = 90.0


def _job_process(worker: WorkerProcess) -> psutil.Process | None:
    try:
        children = psutil.Process(worker.pid).children()
    except psutil.NoSuchProcess:
        return None
    for child in children:
        try:  # RQ's job process puts itself in a process group of its own; its scheduler not
            if os.getpgid(child.pid) == child.pid:
                return child
        except ProcessLookupError:
            continue
    return None


class WorkerPool:
    """Two real ``stepflow worker`` processes; a killed one is replaced at once
    (as a supervisor would)."""

    def __init__(self, start: Callable[..., WorkerProcess]) -> None:
        self.start = start
        self.workers = [start(simple=False), start(simple=False)]

    def kill(self, index: int, simple: bool) -> str:
        victim = self.workers.pop(index % len(self.workers))
        victim.kill()
        self.workers.append(self.start(simple=simple))
        return victim.name

    def kill_job_process(self, index: int) -> str:
        """SIGKILL only the job process (the "horse") a forking worker is running, if any."""
        w = self.workers[index % len(self.workers)]
        horse = _job_process(w)
        if horse is not None:
            try:
                horse.kill()
                return f"{w.name}: killed job process {horse.pid}"
            except psutil.NoSuchProcess:
                pass
        return f"{w.name}: no job process"

    def ensure_alive(self) -> None:
        for i, w in enumerate(self.workers):
            if w.proc.poll() is not None:
                self.workers[i] = self.start(simple=False)


@dataclass(frozen=True)
class Seen:
    status: str
    attempts: int  # a run's attempt, a step's attempts
    resumes: frozenset[int]  # the ids of the run's resumed events seen with it


@dataclass
class Snapshot:
    runs: dict[int, tuple[str, int]]
    steps: dict[int, tuple[int, str, str, int]]  # pk -> (run_id, name, status, attempts)
    attempts: dict[int, dict[int, str]]  # step pk -> {number: status}
    resumed: dict[int, dict[int, dict[str, Any]]]  # run id -> {event id: data}


def snapshot(run_ids: list[int]) -> Snapshot:
    """Runs, steps, attempts and resume events as of one instant (one
    REPEATABLE READ transaction), so checks across tables never see half of a
    transaction."""
    with transaction.atomic():
        with connection.cursor() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        runs = {
            pk: (status, attempt)
            for pk, status, attempt in Run.objects.filter(pk__in=run_ids).values_list(
                "pk", "status", "attempt"
            )
        }
        steps = {
            row[0]: tuple(row[1:])
            for row in StepRun.objects.filter(run_id__in=run_ids).values_list(
                "pk", "run_id", "name", "status", "attempts"
            )
        }
        attempts: dict[int, dict[int, str]] = {pk: {} for pk in steps}
        for step_id, number, status in StepAttempt.objects.filter(
            step__run_id__in=run_ids
        ).values_list("step_id", "number", "status"):
            if number in attempts[step_id]:
                raise AssertionError(f"step run {step_id}: attempt {number} recorded twice")
            attempts[step_id][number] = status
        resumed: dict[int, dict[int, dict[str, Any]]] = {pk: {} for pk in run_ids}
        for pk, run_id, data in RunEvent.objects.filter(
            run_id__in=run_ids, kind="resumed"
        ).values_list("pk", "run_id", "data"):
            resumed[run_id][pk] = data
    return Snapshot(runs, steps, attempts, resumed)  # type: ignore[arg-type]


def ledger(redis_conn, run_ids: list[int]) -> dict[tuple[int, str], int]:  # type: ignore[no-untyped-def]
    counts = {}
    for run_id in run_ids:
        for k, v in redis_conn.hgetall(f"ledger:{run_id}").items():
            counts[(run_id, k.decode())] = int(v)
    return counts


def history(run_id: int) -> str:
    """The run's events and attempts, for a failure message."""
    lines = [f"run #{run_id}:"]
    for e in RunEvent.objects.filter(run_id=run_id).order_by("id"):
        t = e.created_at.strftime("%H:%M:%S.%f")[:-3]
        lines.append(f"  {t} [{e.pk}] {e.kind} {e.step} {e.actor}: {e.message[:120]}")
    for a in StepAttempt.objects.filter(step__run_id=run_id).select_related("step"):
        lines.append(
            f"  attempt {a.step.name}#{a.number} {a.status} on {a.worker} "
            f"{a.started_at:%H:%M:%S.%f}-{a.finished_at and f'{a.finished_at:%H:%M:%S.%f}'}"
        )
    return "\n".join(lines)


class RecoveryMachine(RuleBasedStateMachine):
    #: Set by the test function (a state machine cannot take pytest fixtures).
    pool: WorkerPool
    redis: Any

    runs = Bundle("runs")

    def __init__(self) -> None:
        super().__init__()
        self.run_ids: list[int] = []
        self.seen_runs: dict[int, Seen] = {}
        self.seen_steps: dict[int, Seen] = {}
        self.seen_attempts: dict[tuple[int, int], str] = {}
        self.actions: list[str] = []
        self.t0 = time.monotonic()
        for name in STEPS:
            self.redis.delete(chaos_key(name))

    def log(self, action: str) -> None:
        self.actions.append(f"{time.monotonic() - self.t0:7.2f}s {action}")

    # -- rules ------------------------------------------------------------------------
    @initialize(target=runs)
    def first_run(self) -> int:
        return self._start(0.1)

    @precondition(lambda self: len(self.run_ids) < MAX_RUNS)
    @rule(target=runs, sleep=st.sampled_from([0.05, 0.3]))
    def start(self, sleep: float) -> int:
        return self._start(sleep)

    def _start(self, sleep: float) -> int:
        run = services.start_run("t_chaos", {"sleep": sleep}, origin="test")
        self.run_ids.append(run.pk)
        self.log(f"start run #{run.pk}")
        return run.pk

    @rule(step=st.sampled_from(STEPS), mode=st.sampled_from(CHAOS_MODES))
    def set_mode(self, step: str, mode: str) -> None:
        if mode == "ok":
            self.redis.delete(chaos_key(step))
        else:
            self.redis.set(chaos_key(step), mode)
        self.log(f"{step} -> {mode}")

    @rule(which=st.integers(0, 1), simple=st.booleans())
    def kill_worker(self, which: int, simple: bool) -> None:
        name = self.pool.kill(which, simple)
        self.log(f"SIGKILL worker {name}, replaced by a {'simple' if simple else 'forking'} one")

    @rule(which=st.integers(0, 1))
    def kill_job_process(self, which: int) -> None:
        self.log(f"SIGKILL job process of {self.pool.kill_job_process(which)}")

    @rule(run=runs, mode=st.sampled_from(["resume", "retry_failed"]))
    def resume(self, run: int, mode: str) -> None:
        self._act(f"{mode} #{run}", lambda: services.resume_run(run, mode, origin="test"))

    @rule(run=runs, step=st.sampled_from(STEPS))
    def continue_from(self, run: int, step: str) -> None:
        self._act(
            f"continue #{run} from {step}",
            lambda: services.resume_run(run, "continue_from", step=step, origin="test"),
        )

    @rule(run=runs)
    def cancel(self, run: int) -> None:
        self._act(f"cancel #{run}", lambda: services.cancel_run(run, origin="test"))

    @rule(seconds=st.sampled_from([0.2, 0.5, 1.0, 2.5]))
    def wait(self, seconds: float) -> None:
        self.log(f"wait {seconds}s")
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.1)
            self.observe()

    def _act(self, what: str, action: Callable[[], object]) -> None:
        try:
            action()
        except StepflowError as exc:  # refused: expected in many states
            self.log(f"{what}: refused ({exc})")
        else:
            self.log(f"{what}: done")

    # -- invariants ---------------------------------------------------------------------
    @invariant()
    def consistent(self) -> None:
        self.observe()

    def fail(self, run_id: int, message: str) -> None:
        raise AssertionError(
            f"{message}\nactions:\n  " + "\n  ".join(self.actions) + "\n" + history(run_id)
        )

    def observe(self) -> Snapshot:
        before = ledger(self.redis, self.run_ids)
        snap = snapshot(self.run_ids)
        after = ledger(self.redis, self.run_ids)
        for run_id, (status, attempt) in snap.runs.items():
            resumes = frozenset(snap.resumed[run_id])
            prev = self.seen_runs.get(run_id)
            if prev is not None:
                if attempt < prev.attempts:
                    self.fail(
                        run_id, f"run #{run_id}: attempt went back {prev.attempts}->{attempt}"
                    )
                left = (status, attempt) != (prev.status, prev.attempts)
                if prev.status in RUN_FINISHED and left and not (resumes - prev.resumes):
                    self.fail(
                        run_id,
                        f"run #{run_id} left {prev.status} (attempt {prev.attempts}) for "
                        f"{status} (attempt {attempt}) without a resume",
                    )
            self.seen_runs[run_id] = Seen(status, attempt, resumes)
        finished_runs = {pk for pk, (status, _) in snap.runs.items() if status in RUN_FINISHED}
        for pk, (run_id, name, status, attempts) in snap.steps.items():
            what = f"step {name} of run #{run_id}"
            numbers = snap.attempts[pk]
            if sorted(numbers) != list(range(1, attempts + 1)):
                self.fail(run_id, f"{what}: {attempts} attempts but attempt rows {sorted(numbers)}")
            running = [n for n, s in numbers.items() if s == "running"]
            if len(running) > 1:
                self.fail(run_id, f"{what} has {len(running)} running attempts: {running}")
            if running and running[0] != attempts:
                self.fail(run_id, f"{what}: attempt {running[0]} running, latest is {attempts}")
            if (status == "running") != bool(running):
                self.fail(run_id, f"{what} is {status} but its running attempts are {running}")
            if run_id in finished_runs and status in STEP_ACTIVE:
                self.fail(run_id, f"{what} is {status} in a {snap.runs[run_id][0]} run")
            for n, s in numbers.items():
                old = self.seen_attempts.get((pk, n))
                if old is not None and old != "running" and old != s:
                    self.fail(run_id, f"{what}: attempt {n} changed from {old} to {s}")
                self.seen_attempts[(pk, n)] = s
            done = sum(1 for s in numbers.values() if s in ("completed", "failed"))
            ran_before = before.get((run_id, name), 0)
            ran_after = after.get((run_id, name), 0)
            if ran_before > attempts:
                self.fail(run_id, f"{what} ran {ran_before} times in {attempts} attempts")
            if ran_after < done:
                self.fail(run_id, f"{what} ran {ran_after} times, {done} attempts recorded")
            resumes = frozenset(snap.resumed[run_id])
            prev = self.seen_steps.get(pk)
            if prev is not None:
                if attempts < prev.attempts:
                    self.fail(run_id, f"{what}: attempts went back {prev.attempts}->{attempts}")
                left = (status, attempts) != (prev.status, prev.attempts)
                if prev.status in STEP_FINISHED and left:
                    resets = [
                        data
                        for eid, data in snap.resumed[run_id].items()
                        if eid not in prev.resumes
                        and name in (*data.get("reset", ()), *data.get("skip", ()))
                    ]
                    if not resets:
                        self.fail(
                            run_id,
                            f"{what} left {prev.status} (attempt {prev.attempts}) for {status} "
                            f"(attempt {attempts}) without a reset",
                        )
            self.seen_steps[pk] = Seen(status, attempts, resumes)
        return snap

    # -- the faults stop ----------------------------------------------------------------
    def teardown(self) -> None:
        for name in STEPS:
            self.redis.delete(chaos_key(name))
        self.pool.ensure_alive()
        self.log("faults stop")
        started = time.monotonic()
        deadline = started + SETTLE_TIMEOUT
        while True:
            snap = self.observe()
            active = {pk: s for pk, (s, _) in snap.runs.items() if s not in RUN_FINISHED}
            if not active:
                return
            if time.monotonic() > deadline:
                run_id = min(active)
                self.fail(
                    run_id,
                    f"runs still active {SETTLE_TIMEOUT:g}s after the faults stopped: {active}",
                )
            self.pool.ensure_alive()
            time.sleep(0.3)


def test_recovery_state_machine(start_worker, redis_conn):
    RecoveryMachine.pool = WorkerPool(start_worker)
    RecoveryMachine.redis = redis_conn
    run_state_machine_as_test(
        RecoveryMachine,
        settings=settings(
            max_examples=int(os.environ.get("STEPFLOW_CHAOS_EXAMPLES", "5")),
            stateful_step_count=int(os.environ.get("STEPFLOW_CHAOS_STEPS", "12")),
            deadline=None,
            # Each example takes seconds of real time: no shrinking, no example database.
            phases=[Phase.explicit, Phase.generate],
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )


# -- what the state machine found ---------------------------------------------------------
def _lock_waiters() -> int:
    """Other sessions of the test database waiting for a lock (read afresh even
    inside a transaction, which otherwise sees one snapshot of pg_stat_activity)."""
    with connection.cursor() as cur:
        cur.execute("SELECT pg_stat_clear_snapshot()")
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
        )
        return int(cur.fetchone()[0])


def _kill_before_the_attempt_starts(start_worker, whole_worker: bool) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """Start a one-step-at-a-time run with no worker, hold the first step's row
    lock so the job process blocks inside engine.begin_attempt (before its
    commit), SIGKILL the job process (or the whole worker), then let go."""
    from tests.conftest import wait_for

    run = services.start_run("t_chaos", {"sleep": 0.05}, origin="test")
    step = StepRun.objects.get(run=run, name="fetch")
    assert step.status == "queued"
    with transaction.atomic():
        StepRun.objects.select_for_update().get(pk=step.pk)
        worker = start_worker(simple=False)
        horse = wait_for(lambda: _job_process(worker), 30, 0.05, "the job process")
        # The job process is waiting for our row lock in begin_attempt.
        wait_for(_lock_waiters, 10, 0.05, "the job process to wait for the step's row lock")
        if whole_worker:
            worker.kill()
        else:
            horse.kill()  # type: ignore[attr-defined]
            time.sleep(1)  # the worker notices (handle_work_horse_killed)
    start_worker(simple=False)  # a replacement (or a second) worker
    return run.pk, step.pk


@pytest.mark.parametrize("whole_worker", [False, True], ids=["job-process", "worker"])
def test_killed_before_the_attempt_started_is_delivered_again(
    start_worker, redis_conn, whole_worker
):
    """A job process (or the whole worker) killed after taking a step's job but
    before its attempt began: the reconciler delivers the step again."""
    run_id, step_id = _kill_before_the_attempt_starts(start_worker, whole_worker)
    try:
        from tests.conftest import wait_run

        run = wait_run(run_id, timeout=30)
        assert run.status == "completed"  # type: ignore[attr-defined]
    finally:
        s = StepRun.objects.get(pk=step_id)
        print(f"step {s.name}: {s.status}, attempts {s.attempts}, job {s.job_id}")


def test_cancel_while_a_worker_starts_the_step_is_not_a_deadlock(start_worker, redis_conn):
    """A cancel racing a worker that starts the step is no deadlock (the run row
    is locked FOR NO KEY UPDATE). The interleaving the state machine once hit,
    made certain: the worker's begin_attempt holds the step's row and is held
    up just before its RunEvent insert (by an uncommitted attempt row of ours
    with the same number); the cancel locks the run and waits for the step's
    row; then we let the worker go on."""
    import threading

    from django.utils import timezone

    from tests.conftest import wait_for

    run = services.start_run("t_chaos", {"sleep": 0.05}, origin="test")
    step = StepRun.objects.get(run=run, name="fetch")
    outcome: dict[str, object] = {}

    def cancel() -> None:
        try:
            outcome["result"] = services.cancel_run(run.pk, origin="test").status
        except Exception as exc:
            outcome["error"] = exc
        finally:
            connection.close()

    with transaction.atomic():
        # Holds up the worker's StepAttempt insert (unique step+number) while it
        # holds the step's row lock.
        StepAttempt.objects.create(step=step, number=1, status="running", started_at=timezone.now())
        start_worker(simple=True)
        wait_for(lambda: _lock_waiters() >= 1, 30, 0.05, "the worker to wait on the attempt row")
        t = threading.Thread(target=cancel)
        t.start()
        wait_for(lambda: _lock_waiters() >= 2, 10, 0.02, "the cancel to wait on the step row")
        transaction.set_rollback(True)  # the worker goes on, to its RunEvent insert
    t.join(30)
    assert "error" not in outcome, f"cancel_run raised {outcome.get('error')!r}"
    assert outcome["result"] in ("cancelling", "cancelled")
