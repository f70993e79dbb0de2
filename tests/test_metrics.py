"""Each fusion metric on cases that can be worked out by hand, and on known relations."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from ldfusion import metrics as M

H, W = 48, 64


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def textured(rng: np.random.Generator, shape=(H, W)) -> np.ndarray:
    """Integer grey levels with structure at several scales (a smoothed noise field plus noise)."""
    import cv2

    field = cv2.GaussianBlur(rng.normal(size=shape), (0, 0), 2.0)
    field = (field - field.min()) / (field.max() - field.min()) * 200 + 20
    return np.rint(np.clip(field + rng.normal(0, 4, size=shape), 0, 255))


def constant(value: float, shape=(H, W)) -> np.ndarray:
    return np.full(shape, float(value))


# --- EN ---------------------------------------------------------------------------------


def test_entropy_of_all_256_levels_equally_often_is_8_bits():
    image = np.tile(np.arange(256, dtype=np.float64), (4, 1))  # every level 4 times
    assert M.entropy(image) == pytest.approx(8.0, abs=1e-12)


def test_entropy_of_constant_image_is_zero():
    assert M.entropy(constant(77)) == 0.0
    assert f"{M.entropy(constant(77)):.6f}" == "0.000000"  # metrics.csv said -0.000000


def test_entropy_of_known_histogram():
    # p = (1/2, 1/4, 1/4): H = 0.5*1 + 2 * 0.25*2 = 1.5 bits; values are rounded before counting.
    image = np.array([[10.2, 10.0, 30.0, 200.4]] * 3)
    assert M.entropy(image) == pytest.approx(1.5, abs=1e-12)


def test_entropy_rounds_and_clips_to_the_256_levels():
    assert M.entropy(np.array([[-20.0, 0.0], [255.0, 300.0]])) == pytest.approx(1.0)  # two levels, half each


# --- SD, SF, AG -----------------------------------------------------------------------


def test_sd_is_the_population_standard_deviation():
    image = np.concatenate([constant(0, (H // 2, W)), constant(100, (H // 2, W))])
    assert M.standard_deviation(image) == pytest.approx(50.0)
    assert M.standard_deviation(constant(9)) == 0.0


def test_spatial_frequency_of_column_stripes_and_of_a_ramp():
    stripes = np.tile([0.0, 10.0], (H, W // 2))  # every horizontal neighbour differs by 10, no vertical change
    assert M.spatial_frequency(stripes) == pytest.approx(10.0)
    ramp = np.add.outer(4.0 * np.arange(H), 3.0 * np.arange(W))  # dx = 3, dy = 4
    assert M.spatial_frequency(ramp) == pytest.approx(5.0)
    assert M.spatial_frequency(constant(50)) == 0.0


def test_average_gradient_of_a_ramp_including_the_borders():
    ramp = np.add.outer(4.0 * np.arange(H), 2.0 * np.arange(W))  # one-sided border differences are 2 and 4 too
    assert M.average_gradient(ramp) == pytest.approx(math.sqrt((2**2 + 4**2) / 2))
    assert M.average_gradient(constant(50)) == 0.0


def test_average_gradient_border_uses_one_sided_differences():
    image = np.zeros((3, 3))
    image[:, 2] = 6.0  # columns 0, 0, 6: Gx = 0 (one-sided), 3 (central), 6 (one-sided)
    expected = np.mean([math.sqrt(g * g / 2) for g in (0.0, 3.0, 6.0)])
    assert M.average_gradient(image) == pytest.approx(expected)


# --- MI ----------------------------------------------------------------------------------


def reference_mi_bits(x: np.ndarray, y: np.ndarray) -> float:
    """MI from explicit counting of level pairs."""
    xs, ys = np.rint(x).astype(int).ravel(), np.rint(y).astype(int).ravel()
    n = len(xs)
    joint, px, py = Counter(zip(xs, ys)), Counter(xs), Counter(ys)
    return sum(c / n * math.log2((c / n) / (px[a] / n * py[b] / n)) for (a, b), c in joint.items())


def test_mutual_information_matches_explicit_counting(rng):
    a, b = textured(rng), textured(rng)
    f = np.rint((a + b) / 2)
    assert M.mutual_information_pair(a, f) == pytest.approx(reference_mi_bits(a, f), abs=1e-9)
    assert M.mutual_information(f, a, b) == pytest.approx(reference_mi_bits(a, f) + reference_mi_bits(b, f), abs=1e-9)


def test_mutual_information_of_a_copy_is_its_entropy(rng):
    a, b = textured(rng), textured(rng)
    assert M.mutual_information_pair(a, a) == pytest.approx(M.entropy(a))
    # F = A: MI(A, F) + MI(B, F) = H(A) + MI(B, A)
    assert M.mutual_information(a, a, b) == pytest.approx(M.entropy(a) + M.mutual_information_pair(b, a))


def test_mutual_information_of_an_intensity_shifted_copy_is_unchanged(rng):
    a = np.clip(textured(rng), 0, 200)
    assert M.mutual_information_pair(a, a + 30) == pytest.approx(M.entropy(a))


def test_mutual_information_of_independent_patterns_is_zero():
    columns = np.tile([0.0, 255.0], (H, W // 2))  # varies along x only
    rows = np.tile([[0.0], [255.0]], (H // 2, W))  # varies along y only: every level pair equally often
    assert M.mutual_information_pair(columns, rows) == pytest.approx(0.0, abs=1e-12)
    assert M.mutual_information(constant(5), columns, rows) == pytest.approx(0.0, abs=1e-12)


# --- SCD ---------------------------------------------------------------------------------


def test_scd_of_the_sum_of_the_sources_is_two(rng):
    a, b = textured(rng), textured(rng)
    assert M.scd(a + b, a, b) == pytest.approx(2.0)


def test_scd_with_a_constant_source_counts_that_term_as_zero(rng):
    a = textured(rng)
    assert M.scd(a, a, constant(40)) == pytest.approx(1.0)  # corr(A, A - 40) = 1, corr(const, 0) -> 0


# --- VIF ---------------------------------------------------------------------------------


def test_vif_of_identical_images_is_one_per_source(rng):
    a = textured(rng, (64, 64))
    assert M.vif_pair(a, a) == pytest.approx(1.0)
    assert M.vif(a, a, a) == pytest.approx(2.0)


def test_vif_drops_with_noise_and_exceeds_one_with_more_contrast(rng):
    a = textured(rng, (64, 64))
    noisy = np.clip(a + rng.normal(0, 25, a.shape), 0, 255)
    stretched = (a - a.mean()) * 1.5 + a.mean()
    assert M.vif_pair(a, noisy) < 0.7
    assert M.vif_pair(a, stretched) > 1.0


def test_vif_of_a_flat_reference_is_one():
    assert M.vif_pair(constant(100, (64, 64)), constant(30, (64, 64))) == 1.0


def reference_vif_statistics_terms(var_r, var_d, cov, noise=2.0, eps=1e-10):
    """Per-pixel numerator and denominator terms written as the case analysis of vifp_mscale.m."""
    num = den = 0.0
    for s1, s2, s12 in zip(var_r.ravel(), var_d.ravel(), cov.ravel()):
        s1, s2 = max(s1, 0.0), max(s2, 0.0)
        g = s12 / (s1 + eps)
        sv = s2 - g * s12
        if s1 < eps:
            g, sv, s1 = 0.0, s2, 0.0
        if s2 < eps:
            g, sv = 0.0, 0.0
        if g < 0:
            sv, g = s2, 0.0
        sv = max(sv, eps)
        num += math.log10(1 + g * g * s1 / (sv + noise))
        den += math.log10(1 + s1 / noise)
    return num, den


def test_vif_matches_the_per_pixel_case_analysis_at_the_finest_scale(rng):
    """With a 17x17 image only the first scale exists; recompute it with explicit windows."""
    ref = textured(rng, (20, 20))
    ref[:, :10] = 80.0  # a flat half exercises the flat-reference cases
    dist = np.clip(ref * 0.8 + rng.normal(0, 10, ref.shape), 0, 255)
    dist[:8] = 15.0  # a flat band exercises the flat-distortion cases
    window = np.outer(M._gaussian_1d(17, 17 / 5), M._gaussian_1d(17, 17 / 5))
    out = 20 - 17 + 1
    stats = np.zeros((3, out, out))
    for i in range(out):
        for j in range(out):
            r, d = ref[i : i + 17, j : j + 17], dist[i : i + 17, j : j + 17]
            mr, md = (window * r).sum(), (window * d).sum()
            stats[:, i, j] = ((window * r * r).sum() - mr * mr, (window * d * d).sum() - md * md, (window * r * d).sum() - mr * md)
    num, den = reference_vif_statistics_terms(*stats)
    assert M.vif_pair(ref, dist) == pytest.approx(num / den, rel=1e-6)


# --- Qabf ------------------------------------------------------------------------------


def test_qabf_ceiling_from_the_constants():
    expected = 0.9994 / (1 + math.exp(-15 * 0.5)) * 0.9879 / (1 + math.exp(-22 * 0.2))
    assert M.qabf_ceiling() == pytest.approx(expected)
    assert 0.97 < M.qabf_ceiling() < 0.98


def test_qabf_of_a_perfect_copy_of_ir_only_content_reaches_the_ceiling(rng):
    a = textured(rng)
    assert M.qabf(a, a, constant(0)) == pytest.approx(M.qabf_ceiling(), abs=1e-12)


def test_qabf_sees_the_zero_padded_border_of_a_bright_flat_source(rng):
    # As in the evaluators (conv2 'same'), a flat grey source has edges at its border that
    # F = A does not reproduce, so the score falls below the ceiling.
    a = textured(rng)
    assert M.qabf(a, a, constant(128)) < M.qabf_ceiling() - 0.01


def test_qabf_of_a_flat_fusion_is_near_zero_and_of_flat_sources_is_zero(rng):
    a, b = textured(rng), textured(rng)
    assert M.qabf(constant(0), a, b) < 0.001
    assert M.qabf(a, constant(0), constant(0)) == 0.0


def test_qabf_is_symmetric_in_the_sources_and_lower_for_a_shifted_copy(rng):
    a, b = textured(rng), textured(rng)
    f = np.rint((a + b) / 2)
    assert M.qabf(f, a, b) == pytest.approx(M.qabf(f, b, a))
    shifted = np.roll(a, 3, axis=1)
    assert M.qabf(shifted, a, constant(0)) < 0.8 * M.qabf(a, a, constant(0))


def reference_qabf(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf written pixel by pixel with MATLAB conv2 'same' semantics (zero padding, kernel flipped)."""
    h_y = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)
    h_x = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)

    def conv2_same(img, k):
        padded = np.pad(img, 1)
        flipped = k[::-1, ::-1]
        return np.array([[(padded[i : i + 3, j : j + 3] * flipped).sum() for j in range(img.shape[1])] for i in range(img.shape[0])])

    def strength_angle(img):
        sx, sy = conv2_same(img, h_x), conv2_same(img, h_y)
        angle = np.where(sx == 0, math.pi / 2, np.arctan(sy / np.where(sx == 0, 1, sx)))
        return np.hypot(sx, sy), angle

    gf, af = strength_angle(f)
    num = den = 0.0
    for src in (a, b):
        gs, as_ = strength_angle(src)
        for i in range(f.shape[0]):
            for j in range(f.shape[1]):
                g1, g2 = gs[i, j], gf[i, j]
                ratio = 1.0 if g1 == g2 else min(g1, g2) / max(g1, g2)
                orient = 1 - abs(as_[i, j] - af[i, j]) / (math.pi / 2)
                q = 0.9994 / (1 + math.exp(-15 * (ratio - 0.5))) * 0.9879 / (1 + math.exp(-22 * (orient - 0.8)))
                num += q * g1
                den += g1
    return num / den


def test_qabf_matches_a_pixel_by_pixel_reference(rng):
    a, b = textured(rng, (12, 14)), textured(rng, (12, 14))
    f = np.rint(0.7 * a + 0.3 * np.roll(b, 1, axis=0))
    assert M.qabf(f, a, b) == pytest.approx(reference_qabf(f, a, b), abs=1e-12)


def test_qabf_on_a_horizontal_edge_crossed_by_a_ramp_matches_the_reference():
    """Where the source has s_x = 0 (a pure horizontal edge) and F a small s_x (the ramp), the
    sign of s_x decides the orientation score: 0.5526 with MATLAB's conv2 signs (CDDFuse,
    VIFB), 0.7618 with OpenCV's. Random textures never have s_x exactly 0."""
    edge = np.zeros((8, 8))
    edge[4:] = 100.0
    ramp = np.tile(np.arange(8.0), (8, 1))  # one grey level per column
    f, a, b = edge + ramp, edge, constant(0, (8, 8))
    expected = reference_qabf(f, a, b)
    assert expected == pytest.approx(0.5526, abs=5e-5)
    assert M.qabf(f, a, b) == pytest.approx(expected, abs=1e-12)
    assert M.qabf(edge + ramp.T, edge.T, b) == pytest.approx(reference_qabf(edge + ramp.T, edge.T, b), abs=1e-12)


# --- SSIM --------------------------------------------------------------------------------


def test_ssim_of_an_image_with_itself_is_one_per_source(rng):
    a = textured(rng)
    assert M.ssim_sum(a, a, a) == pytest.approx(2.0, abs=1e-6)


def test_ssim_of_constant_images_is_the_luminance_term():
    c1, c2 = 0.01 * 255, 0.03 * 255  # stabilisers K1 L, K2 L
    value = (2 * 100 * 60 + c1**2) / (100**2 + 60**2 + c1**2)  # zero variances: the structure term is 1
    f = constant(100, (32, 32))
    assert M.ssim_sum(f, constant(60, (32, 32)), constant(100, (32, 32))) == pytest.approx(value + 1.0, abs=1e-6)
    assert c2 > 0


def test_ssim_is_symmetric_and_a_shifted_copy_scores_lower(rng):
    a, b = textured(rng), textured(rng)
    # SSIM(A, A) + SSIM(B, A) == SSIM(A, B) + SSIM(B, B)
    assert M.ssim_sum(a, a, b) == pytest.approx(M.ssim_sum(b, a, b), abs=1e-6)
    assert M.ssim_sum(np.roll(a, 4, axis=1), a, a) < 1.8


def test_ssim_agrees_with_the_shared_ssim_map(rng):
    from ldfusion.ssim import ssim_map

    a, b = textured(rng), textured(rng)
    f = np.rint((a + b) / 2)
    expected = sum(
        float(ssim_map(torch.from_numpy(f)[None, None], torch.from_numpy(s)[None, None], data_range=255.0).mean())
        for s in (a, b)
    )
    assert M.ssim_sum(f, a, b) == pytest.approx(expected, abs=1e-10)


# --- evaluate_all and input checks -----------------------------------------------------------


def test_evaluate_all_returns_every_metric_and_accepts_arrays_and_tensors(rng):
    a, b = textured(rng), textured(rng)
    f = np.rint((a + b) / 2)
    scores = M.evaluate_all(f, a, b)
    assert tuple(scores) == M.METRIC_NAMES
    assert all(math.isfinite(v) for v in scores.values())
    from_other_types = M.evaluate_all(torch.from_numpy(f).float(), a.astype(np.uint8), torch.from_numpy(b))
    for name in M.METRIC_NAMES:
        assert from_other_types[name] == pytest.approx(scores[name], rel=1e-5, abs=1e-6)


def test_a_fusion_keeping_both_sources_scores_better_than_one_dropping_a_source(rng):
    a, b = textured(rng), textured(rng)
    a[:, W // 2 :] = 0  # IR content on the left, visible content on the right
    b[:, : W // 2] = 0
    union, only_a = M.evaluate_all(a + b, a, b), M.evaluate_all(a, a, b)
    assert union["Qabf"] > only_a["Qabf"] + 0.1
    assert union["MI"] > only_a["MI"]
    assert union["SCD"] == pytest.approx(2.0) and only_a["SCD"] < 1.5


def test_mismatched_or_non_gray_inputs_are_rejected(rng):
    a = textured(rng)
    with pytest.raises(ValueError, match="differ in size"):
        M.evaluate_all(a, a, a[:-1])
    with pytest.raises(ValueError, match="single-channel"):
        M.entropy(np.stack([a, a, a], axis=-1))
    with pytest.raises(ValueError, match="at least 11x11"):
        M.ssim_sum(a[:8, :8], a[:8, :8], a[:8, :8])
