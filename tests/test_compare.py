import math

import numpy as np
import pytest

from parbench import compare as cmp


def test_generic_metrics_known_values():
    r = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    a = r + np.array([0.0, 0.0, 0.0, 0.5], np.float32)
    m = cmp.generic_metrics(a, r)
    assert m["max_abs"] == pytest.approx(0.5)
    assert m["mean_abs"] == pytest.approx(0.125)
    assert m["rel_l2"] == pytest.approx(0.5 / math.sqrt(30))
    assert m["snr_db"] == pytest.approx(10 * math.log10(30 / 0.25))
    assert m["psnr_db"] == pytest.approx(20 * math.log10(3.0) - 10 * math.log10(0.25 / 4))
    cos = float(a @ r) / (np.linalg.norm(a) * np.linalg.norm(r))
    assert m["cosine"] == pytest.approx(cos)


def test_identical_and_zero_arrays_are_finite():
    r = np.ones(10, np.float32)
    m = cmp.generic_metrics(r, r)
    assert m["snr_db"] == cmp.CAP_DB and m["psnr_db"] == cmp.CAP_DB and m["cosine"] == pytest.approx(1.0)
    z = cmp.generic_metrics(np.zeros(3), np.ones(3))
    assert z["cosine"] == 0.0 and all(math.isfinite(v) for v in z.values())


def test_classification_and_segmentation_metrics():
    r = np.array([[0.1, 0.9, 0.3, 0.2, 0.0, -1.0]])
    a = np.array([[0.95, 0.9, 0.3, 0.2, 0.0, -1.0]])  # top-1 flips, top-5 set unchanged
    m = cmp.classification_metrics(a, r)
    assert m == {"top1_agree": 0.0, "top5_overlap": 1.0}
    ref = np.zeros((1, 2, 2, 2))
    ref[0, 1, 0, :] = 1  # top row class 1, bottom row class 0
    cand = ref.copy()
    cand[0, 1, 1, 0] = 2  # one pixel of the bottom row turns class 1
    s = cmp.segmentation_metrics(cand, ref)
    assert s["pixel_accuracy"] == 0.75
    assert s["mean_iou"] == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_policy_verdict_and_explanation():
    rng = np.random.default_rng(0)
    r = {"output": rng.standard_normal((1, 1000)).astype(np.float32)}
    close = {"output": r["output"] + 1e-6}
    assert cmp.compare(close, r, "classification", "fp32").passed
    noisy = {"output": r["output"] + rng.standard_normal((1, 1000)).astype(np.float32) * 0.05}
    comp = cmp.compare(noisy, r, "classification", "fp32")
    assert not comp.passed
    text = comp.explain()
    assert "rel_l2" in text and "FAIL" in text and "worst elements" in text
    # the fp16 policy tolerates this much noise; an override by variant can tighten it again
    lenient = cmp.compare(noisy, r, "classification", "fp16", "coreml_fp16")
    strict = cmp.compare(noisy, r, "classification", "fp16", "coreml_fp16", {"coreml_fp16": {"rel_l2": 1e-4}})
    assert lenient.outputs[0].metrics == strict.outputs[0].metrics
    assert not strict.passed
    assert {c.metric: c.threshold for c in strict.outputs[0].checks}["rel_l2"] == 1e-4


def test_shape_mismatch_and_nan_are_failures_not_crashes():
    r = {"out": np.ones((1, 4), np.float32)}
    comp = cmp.compare({"out": np.ones((1, 5), np.float32)}, r, "generic", "fp32")
    assert not comp.passed and "shape mismatch" in comp.explain()
    comp = cmp.compare({"out": np.array([[1, np.nan, 1, 1]], np.float32)}, r, "generic", "fp32")
    assert not comp.passed and "NaN" in comp.explain()
    comp = cmp.compare({}, r, "generic", "fp32")
    assert not comp.passed and "missing" in comp.explain()


def test_worst_elements_are_the_largest_errors_in_order_ties_by_position():
    from parbench.compare import _largest

    rng = np.random.default_rng(7)
    for _ in range(200):
        values = rng.integers(0, 4, size=int(rng.integers(0, 40))).astype(float)
        for n in (0, 1, 3, 50):
            assert list(_largest(values, n)) == list(np.argsort(-values, kind="stable")[:n])


def test_metrics_and_worst_elements_over_many_blocks_match_whole_array_arithmetic():
    # larger than several of the error pass's blocks, with tied errors across block boundaries
    rng = np.random.default_rng(3)
    n = 3 * cmp._BLOCK + 17
    r = rng.standard_normal((1, n)).astype(np.float32)
    a = r.copy()
    ties = rng.choice(n, size=40, replace=False)
    a[0, ties] += 0.5  # forty equal worst errors, most in different blocks
    a[0, rng.choice(n, size=1000, replace=False)] += 0.25
    comp = cmp.compare({"o": a}, {"o": r}, "generic", "fp32", n_worst=5)
    err = np.abs(a.astype(np.float64) - r.astype(np.float64)).ravel()
    want = np.argsort(-err, kind="stable")[:5]
    assert [w[0][1] for w in comp.outputs[0].worst] == list(want)
    d, r64, a64 = (
        (a.astype(np.float64) - r).ravel(),
        r.astype(np.float64).ravel(),
        a.astype(np.float64).ravel(),
    )
    m = comp.outputs[0].metrics
    assert m["max_abs"] == pytest.approx(np.abs(d).max(), rel=1e-12)
    assert m["mean_abs"] == pytest.approx(np.abs(d).mean(), rel=1e-12)
    assert m["rel_l2"] == pytest.approx(np.linalg.norm(d) / np.linalg.norm(r64), rel=1e-12)
    assert m["cosine"] == pytest.approx(a64 @ r64 / (np.linalg.norm(a64) * np.linalg.norm(r64)), rel=1e-12)
