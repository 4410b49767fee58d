"""Steps in a case's history, on synthetic series with known answers: where, how large, and how sure."""

import numpy as np
import pytest

from bench.verdicts.steps import MIN_SIZE, _critical_z, find_steps, noise

THRESHOLD = 0.05


def series(n: int, sigma: float, seed: int, steps: dict[int, float] | None = None) -> np.ndarray:
    """n medians around 10 ms with lognormal noise sigma, multiplied by each step's ratio from its index on."""
    rng = np.random.default_rng(seed)
    level = np.ones(n)
    for at, ratio in (steps or {}).items():
        level[at:] *= ratio
    return 0.010 * level * rng.lognormal(0.0, sigma, n)


def confirmed(found) -> list:
    return [step for step in found.steps if step.status == "confirmed"]


def test_a_planted_ten_percent_step_is_found_where_it_is_and_as_large():
    hits = 0
    for seed in range(100):
        found = confirmed(find_steps(series(60, 0.02, seed, {40: 1.10}), THRESHOLD))
        if [step.index for step in found] == [40] and abs(found[0].ratio / 1.10 - 1) <= 0.02:
            hits += 1
    assert hits >= 95


@pytest.mark.parametrize("sigma", [0.02, 0.03, 0.04])
def test_flat_series_raise_no_alarm(sigma):
    alarms = sum(bool(confirmed(find_steps(series(60, sigma, seed), THRESHOLD))) for seed in range(1000 // 3 + 1))
    assert alarms == 0


def test_a_series_that_jumps_between_two_host_speeds_raises_no_alarm():
    """This CPU's runs land on a fast or a slow level, 30 % apart, at random: no level ever changed, though a
    stretch of slow runs looks like a step (at ALPHA 1e-4 seed 744 alarmed: index 45, ratio 1.20)."""
    alarms = 0
    for seed in range(1000):
        rng = np.random.default_rng(10_000 + seed)
        medians = series(60, 0.02, seed) * np.where(rng.random(60) < 0.3, 1.3, 1.0)
        alarms += bool(confirmed(find_steps(medians, THRESHOLD)))
    assert alarms == 0


def test_a_single_spike_is_an_outlier_not_a_step():
    medians = series(60, 0.02, 7)
    medians[30] *= 1.3
    found = find_steps(medians, THRESHOLD)
    assert found.steps == () and found.outliers == (30,)


def test_a_step_below_the_threshold_is_not_flagged():
    found = find_steps(series(60, 0.005, 8, {30: 1.03}), THRESHOLD)  # clear at 0.5 % noise, yet under 5 %
    assert found.steps == ()
    assert [step.index for step in find_steps(series(60, 0.005, 8, {30: 1.03}), 0.02).steps] == [30]


def test_two_steps_are_both_found():
    found = confirmed(find_steps(series(60, 0.02, 9, {20: 1.10, 45: 0.85}), THRESHOLD))
    assert [step.index for step in found] == [20, 45]
    assert found[0].ratio == pytest.approx(1.10, rel=0.03) and found[1].ratio == pytest.approx(0.85, rel=0.03)


def test_a_step_at_the_end_is_suspected_then_confirmed_once_enough_points_follow():
    medians = series(63, 0.02, 11, {60: 1.15})
    for points in range(61, 63):  # one, then two points at the new level
        steps = find_steps(medians[:points], THRESHOLD).steps
        assert [(step.index, step.status) for step in steps] == [(60, "suspected")]
    steps = find_steps(medians, THRESHOLD).steps  # MIN_SIZE points after it
    assert MIN_SIZE == 3 and [(step.index, step.status) for step in steps] == [(60, "confirmed")]


def test_the_unit_does_not_matter():
    medians = series(60, 0.02, 12, {25: 1.2})
    in_seconds, in_microseconds = find_steps(medians, THRESHOLD), find_steps(medians * 1e6, THRESHOLD)
    assert [(s.index, round(s.ratio, 9)) for s in in_seconds.steps] == [
        (s.index, round(s.ratio, 9)) for s in in_microseconds.steps] == [(25, round(in_seconds.steps[0].ratio, 9))]


def test_a_point_with_a_wide_interval_of_its_own_counts_less():
    medians = series(30, 0.01, 13)
    medians[27:] *= 1.25  # three points at a new level ...
    widths = np.full(30, 0.01)
    assert [step.index for step in find_steps(medians, THRESHOLD, widths).steps] == [27]
    widths[27:] = 2.0  # ... each measured to +-200 %: they cannot carry a step
    assert confirmed(find_steps(medians, THRESHOLD, widths)) == []


def test_too_short_or_flat_series_have_nothing_to_say():
    assert find_steps([1.0, 2.0, 3.0], THRESHOLD).steps == ()
    assert find_steps([1.0, 1.001, 1.0, 2.0, 2.001], THRESHOLD).steps == ()  # five: under 2 x MIN_SIZE
    assert find_steps([1.0] * 20, THRESHOLD).steps == ()
    assert find_steps([5.0], THRESHOLD).levels == pytest.approx((5.0,)) and find_steps([], THRESHOLD).levels == ()


def test_a_step_three_points_long_and_then_a_last_point_are_both_seen():
    found = find_steps(series(24, 0.01, 5, {20: 1.3, 23: 1.25}), THRESHOLD)
    assert [(s.index, s.status) for s in found.steps] == [(20, "confirmed"), (23, "suspected")]


def test_each_point_s_level_is_its_segment_s_geometric_mean():
    medians = np.array([1.0, 1.0, 1.0, 1.0, 4.0, 4.0, 4.0, 4.0]) * np.array([0.99, 1.01] * 4)
    found = find_steps(medians, THRESHOLD)
    assert [step.index for step in found.steps] == [4]
    assert found.levels == pytest.approx([np.sqrt(0.99 * 1.01)] * 4 + [4 * np.sqrt(0.99 * 1.01)] * 4)
    assert find_steps([2.0, 8.0], THRESHOLD).levels == pytest.approx((4.0, 4.0))


@pytest.mark.parametrize(("at", "factor", "outliers", "tail"),
                         [(35, 2.0, (35,), []), (49, 0.5, (), [(49, "suspected")])])
def test_one_wild_point_does_not_hide_a_real_step(at, factor, outliers, tail):
    """A 2x spike or a last point at half the level swells the series' noise five-fold; the fit is done again
    without the spike, and the noise taken within levels, so the 10 % step at 20 still shows."""
    for seed in range(20):
        medians = series(50, 0.005, seed, {20: 1.10})
        medians[at] *= factor
        found = find_steps(medians, THRESHOLD)
        assert [(s.index, s.status) for s in found.steps] == [(20, "confirmed"), *tail] and found.outliers == outliers
        assert found.sigma == pytest.approx(0.005, rel=0.5)


def test_noise_by_hand_from_the_differences_within_levels():
    y = np.array([0.0, 0.1, 0.1, 0.3, 0.2])
    # differences 0.1, 0, 0.2, -0.1; the one from level 0 to 1 (0.2) left out: sqrt((0.01 + 0 + 0.01) / 3 / 2)
    assert noise(y, np.array([0, 0, 0, 1, 1])) == pytest.approx(np.sqrt(0.02 / 6))
    assert noise(y, np.arange(5)) == 0.0  # no two points on one level


def test_a_step_s_ratio_and_z_by_hand_with_the_series_noise_or_its_own_intervals():
    y = np.array([0.0, 0.02] * 3 + [0.5, 0.52] * 3)  # within each level the differences are +-0.02
    [step] = find_steps(np.exp(y), THRESHOLD).steps
    sigma = np.sqrt(0.02**2 / 2)  # von Neumann's, the jump at the step left out
    assert (step.index, step.status) == (6, "confirmed") and step.ratio == pytest.approx(np.exp(0.5))
    assert step.z == pytest.approx(0.5 / (sigma * np.sqrt(1 / 6 + 1 / 6)))  # 61.2
    [step] = find_steps(np.exp(y), THRESHOLD, np.full(12, 0.196)).steps  # +-19.6 %: a sigma of 0.1 each
    assert step.z == pytest.approx(0.5 / (0.196 / 1.959964 * np.sqrt(1 / 6 + 1 / 6)))  # 8.66


def test_a_short_series_shows_its_step_though_the_step_is_most_of_its_spread():
    """Six counts, three and three: the jump would be nearly all of von Neumann's noise, so the first fit
    leaves the largest difference out."""
    medians = np.array([21.69, 21.70, 21.69, 22.38, 22.39, 22.38])
    assert [(s.index, s.status) for s in find_steps(medians, 0.01).steps] == [(3, "confirmed")]


@pytest.mark.parametrize(("seed", "steps", "kept"), [
    (814, {19: 0.9562, 33: 0.9462}, [(33, 0.92)]),  # the first of two
    (87, {6: 1.1326, 20: 0.9477, 27: 0.9536}, [(6, 1.13), (20, 0.92)]),  # the last of three
])
def test_a_step_below_the_threshold_between_its_neighbours_is_merged_away(seed, steps, kept):
    """Steps of under 5 % (-4.4 % at 19 of the first, -4.6 % at 27 of the second): against everything on its
    far side each reads over 5 % and binary segmentation keeps it; between its neighbours it is under, and
    the merge drops it (at 4 % every step stays)."""
    medians = series(40, 0.01, seed, steps)
    assert [(s.index, round(s.ratio, 2)) for s in find_steps(medians, THRESHOLD).steps] == kept
    assert [s.index for s in find_steps(medians, 0.04).steps] == list(steps)


def test_a_dip_just_before_a_step_is_an_outlier_not_a_step_of_its_own():
    """A one-point change is a step only at the end of a series (suspected); inside it needs MIN_SIZE points."""
    medians = series(60, 0.01, 3, {30: 1.3})
    medians[29] *= 0.7
    found = find_steps(medians, THRESHOLD)
    assert [s.index for s in found.steps] == [30] and found.outliers == (29,)


def test_the_significance_bound_is_two_sided_and_bonferroni_over_the_splits():
    assert _critical_z(1) == pytest.approx(4.8916, abs=1e-4)  # two-sided 1e-6
    assert _critical_z(50) == pytest.approx(5.6120, abs=1e-4)  # two-sided 2e-8
    assert _critical_z(0) == _critical_z(1)
