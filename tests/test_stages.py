"""Stage timers: exclusive time per stage, nested collection reported as one stage."""

import time

from parbench._util.stages import collect, current, stage


def test_stages_are_exclusive_and_add_up_to_the_block():
    with collect() as t:
        with stage("outer"):
            time.sleep(0.02)
            with stage("inner"):
                time.sleep(0.03)
        with stage("inner"):
            time.sleep(0.01)
    assert set(t) == {"outer", "inner"}
    assert 0.015 < t["outer"] < 0.035  # its own 20 ms, not the inner 30 ms
    assert 0.035 < t["inner"] < 0.07  # both inner blocks


def test_nested_collect_shows_as_one_stage_outside_and_in_detail_inside():
    with collect() as outer:
        with stage("artifact"):
            time.sleep(0.01)
            with collect(as_stage="export") as inner:
                with stage("lowering"):
                    time.sleep(0.03)
    assert set(inner) == {"lowering"}
    assert set(outer) == {"artifact", "export"}
    assert outer["export"] >= inner["lowering"] > 0.025
    assert outer["artifact"] < 0.025  # the export is not counted twice


def test_outside_collect_nothing_is_recorded():
    assert current() is None
    with stage("run"):
        pass
    assert current() is None
    with collect() as t:
        assert current() is t
    assert current() is None


def test_an_exception_still_closes_the_stage():
    with collect() as t:
        try:
            with stage("conversion"):
                raise ValueError("converter failed")
        except ValueError:
            pass
    assert "conversion" in t


def test_cpu_seconds_count_work_not_waiting():
    with collect() as t:
        with stage("sleep"):
            time.sleep(0.1)
        with stage("spin"):
            end = time.perf_counter() + 0.1
            while time.perf_counter() < end:
                pass
    assert t.cpu["sleep"] < 0.05 < t["sleep"]
    assert t.cpu["spin"] > 0.02  # a busy loop burns CPU even on a loaded machine
