"""The controller's per-step timing (stackube.controller.timeline): pure, no I/O."""

from __future__ import annotations

import contextvars
import datetime
import threading

import pytest

from stackube.controller import timeline

pytestmark = pytest.mark.unit


def _count(kind: str, step: str) -> float:
    for metric in timeline.STEP_DURATION.collect():
        for sample in metric.samples:
            if (
                sample.name.endswith("_count")
                and sample.labels.get("kind") == kind
                and sample.labels.get("step") == step
            ):
                return sample.value
    return 0.0


def test_a_pass_collects_its_steps_in_order_and_the_metric_counts_them() -> None:
    before = _count("unit-kind", "first")
    with timeline.timed_pass("unit-kind") as steps:
        with timeline.step("first"):
            pass
        with timeline.step("second"):
            pass
    assert [name for name, _ in steps.steps] == ["first", "second"]
    assert all(seconds >= 0 for _, seconds in steps.steps)
    assert _count("unit-kind", "first") == before + 1
    assert steps.summary().startswith("first ") and ", second " in steps.summary()


def test_the_summary_gives_each_step_in_the_order_it_ended() -> None:
    steps = timeline.PassTimeline("unit-kind", clock=lambda: 0.0)
    steps.record("project", 0.123)
    steps.record("namespace", 0.03)
    steps.record("project", 1.5)
    assert steps.summary() == "project 0.12 s, namespace 0.03 s, project 1.50 s"


def test_a_step_that_raises_is_still_timed() -> None:
    with (
        timeline.timed_pass("unit-kind") as steps,
        pytest.raises(RuntimeError),
        timeline.step("failing"),
    ):
        raise RuntimeError("Neutron said no")
    assert [name for name, _ in steps.steps] == ["failing"]


def test_steps_outside_a_pass_are_not_recorded() -> None:
    before = _count("unit-kind", "stray")
    with timeline.step("stray"):
        pass
    assert _count("unit-kind", "stray") == before
    with timeline.timed_pass("unit-kind") as steps:
        pass
    assert steps.summary() == "no steps"


def test_a_thread_started_in_a_copy_of_the_context_records_into_the_pass() -> None:
    def router() -> None:
        with timeline.step("router-create"):
            pass

    with timeline.timed_pass("unit-kind") as steps:
        worker = threading.Thread(target=contextvars.copy_context().run, args=(router,))
        worker.start()
        worker.join()
        # A thread without the copied context is outside the pass.
        stray = threading.Thread(target=router)
        stray.start()
        stray.join()
    assert [name for name, _ in steps.steps] == ["router-create"]


def test_seconds_since_a_kubernetes_timestamp() -> None:
    now = datetime.datetime(2026, 12, 4, 8, 0, 10, tzinfo=datetime.UTC)
    assert timeline.seconds_since("2026-12-04T08:00:00Z", now) == 10.0
    # A clock a little behind the apiserver's never gives a negative duration.
    assert timeline.seconds_since("2026-12-04T08:00:20Z", now) == 0.0
    assert timeline.seconds_since(None, now) is None
    assert timeline.seconds_since("yesterday", now) is None


def test_once_each_counts_an_object_once_until_it_is_forgotten() -> None:
    once = timeline.OnceEach()
    assert [once.first("a"), once.first("b"), once.first("a")] == [True, True, False]
    once.forget("a")
    assert once.first("a") is True
