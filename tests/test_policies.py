"""Data-collection policies: ranges and seeding (no game)."""

import numpy as np
import pytest

from vmc.policies import POLICIES, make_policy
from vmc.sim.track import TrackGeometry


def straight_track() -> TrackGeometry:
    xs = np.arange(0, 1000, 10.0)
    start = np.stack([np.zeros_like(xs), np.zeros_like(xs), xs], 1)
    end = start + [0, 0, 10.0]
    return TrackGeometry("straight", 1000.0, start, end, np.full(len(xs), 10.0), np.stack([xs, xs + 10], 1))


def rollout(name: str, seed: int, steps: int = 200) -> np.ndarray:
    p = make_policy(name)
    p.reset(straight_track(), seed)
    info = {"location": np.array([1.0, 0, 0]), "front": np.array([1.0, 0, 1.0]), "distance": 0.0, "speed": 10.0}
    return np.stack([p.act(None, info) for _ in range(steps)])


@pytest.mark.parametrize("name", [p for p in POLICIES if p not in ("ai", "controller")])
def test_actions_in_range_and_seeded(name):
    a = rollout(name, seed=5)
    assert a.shape == (200, 3) and a.dtype == np.float32
    assert a[:, 0].min() >= -1 and a[:, 0].max() <= 1 and a[:, 1].min() >= 0 and a[:, 1].max() <= 1
    assert set(np.unique(a[:, 2])) <= {0.0, 1.0}
    np.testing.assert_array_equal(a, rollout(name, seed=5))
    assert not np.array_equal(a, rollout(name, seed=6))


def test_brownian_actions_are_temporally_correlated():
    steer = rollout("brownian", seed=1, steps=2000)[:, 0]
    lag1 = np.corrcoef(steer[:-1], steer[1:])[0, 1]
    assert lag1 > 0.8


def test_mix_switches_between_driving_and_random_spells():
    p = make_policy("mix")
    p.reset(straight_track(), 3)
    info = {"location": np.array([1.0, 0, 0]), "front": np.array([1.0, 0, 1.0]), "distance": 0.0, "speed": 10.0}
    modes = []
    for _ in range(400):
        p.act(None, info)
        modes.append(p.following)
    switches = np.count_nonzero(np.diff(np.array(modes, int)))
    assert switches >= 4 and 0.5 < np.mean(modes) < 0.95


def test_unknown_policy_is_named():
    with pytest.raises(ValueError, match="brownian"):
        make_policy("wander")
    with pytest.raises(ValueError, match="checkpoint"):
        make_policy("controller")


def test_exploration_noise_independent_or_correlated():
    """Independent noise is the evaluations' (the same draws as ever for a seed); correlated noise keeps its std and
    holds each deviation for several steps; a correlation of 1 or more is refused."""
    from vmc.racing import Exploration

    own = np.array([0.0, 0.5, 0.0], np.float32)
    drawn = np.random.default_rng(3).normal(0.0, 0.1, 2).astype(np.float32)
    np.testing.assert_array_equal(Exploration(0.1, 3)(0, own)[:2], own[:2] + drawn)
    runs = [np.stack([e(t, own)[0] for t in range(4000)]) for e in (Exploration(0.1, 3), Exploration(0.1, 3, correlation=0.9))]
    lag1 = [np.corrcoef(r[:-1], r[1:])[0, 1] for r in runs]
    assert abs(lag1[0]) < 0.1 and lag1[1] > 0.8
    assert 0.085 < runs[1].std() < 0.115
    again = Exploration(0.1, 3, correlation=0.9)
    np.testing.assert_array_equal(runs[1][:50], [again(t, own)[0] for t in range(50)])
    with pytest.raises(ValueError, match="correlation"):
        Exploration(0.1, 3, correlation=1.0)


def test_dagger_spells_one_per_slice_the_single_spell_unchanged():
    """``spells`` 1 is the spell a seed always had (from [10, window)); more put one spell in each 150-step slice,
    each ``steps`` long and at least 40 steps after the one before, the same for the same seed; evolve refuses 0."""
    from vmc.evolve import EvolveConfig
    from vmc.racing import Perturbation

    start = int(np.random.default_rng([3, 7]).integers(10, 400))
    assert Perturbation(3, 10, 400).at == range(start, start + 10)
    many = Perturbation(3, 10, 400, spells=4)
    assert len(many.spells) == 4 and all(len(s) == 10 for s in many.spells)
    assert all(k * 150 + 10 <= s.start < (k + 1) * 150 - 40 for k, s in enumerate(many.spells))
    assert all(b.start - a.stop >= 40 for a, b in zip(many.spells, many.spells[1:]))
    acting = [t for t in range(700) if many.action(t) is not None]
    assert acting == [t for s in many.spells for t in s]
    assert Perturbation(3, 10, 400, spells=4).spells == many.spells and Perturbation(4, 10, 400, spells=4).spells != many.spells
    assert Perturbation(None, 10, 400, spells=4).action(many.at.start) is None
    with pytest.raises(ValueError, match="--dagger-spells must be at least 1"):
        EvolveConfig(dagger_spells=0).validate()


def test_dagger_focus_sends_the_next_rounds_races_to_the_failed_tracks():
    """Without focus (or without a failure) every track in turn, as before; with focus K, K races for each track whose
    race failed, the rest in turn over the others; evolve refuses 0."""
    from vmc.dagger import round_tracks
    from vmc.evolve import EvolveConfig

    tracks = ["a", "b", "c", "d"]
    assert round_tracks(tracks, 6, 1, ["b"], 1) == ["c", "d", "a", "b", "c", "d"]
    assert round_tracks(tracks, 6, 1, [], 3) == round_tracks(tracks, 6, 1, [], 1)
    assert round_tracks(tracks, 6, 1, ["b", "d"], 2) == ["b", "b", "d", "d", "a", "c"]
    assert round_tracks(tracks, 4, 0, ["c", "a", "b"], 3) == ["c", "c", "c", "a"]
    assert round_tracks(tracks, 5, 2, tracks, 1) == round_tracks(tracks, 5, 2, [], 1)
    with pytest.raises(ValueError, match="--dagger-focus must be at least 1"):
        EvolveConfig(dagger_focus=0).validate()


def test_dagger_focus_before_starts_the_focus_races_ahead_of_where_their_track_failed():
    """Focus races start ``before`` ahead of the failure (not below the line); the other races, and every race without
    ``before`` or without focus, start at the line; evolve checks the option."""
    from vmc.dagger import focus_starts, round_tracks
    from vmc.evolve import EvolveConfig

    tracks, failed_at = ["a", "b", "c", "d"], {"b": 0.86, "d": 0.03}
    picks = round_tracks(tracks, 6, 1, list(failed_at), 2)
    assert picks == ["b", "b", "d", "d", "a", "c"]
    assert focus_starts(picks, failed_at, 2, 0.05) == pytest.approx([0.81, 0.81, 0.0, 0.0, 0.0, 0.0])
    assert focus_starts(picks, failed_at, 2, 0.0) == [0.0] * 6
    assert focus_starts(round_tracks(tracks, 3, 1, list(failed_at), 3), failed_at, 3, 0.1) == pytest.approx([0.76] * 3)
    assert focus_starts(["a", "b"], {}, 3, 0.1) == [0.0, 0.0]
    with pytest.raises(ValueError, match="needs --dagger-focus 2 or more"):
        EvolveConfig(dagger_focus_before=0.05).validate()
    with pytest.raises(ValueError, match="--dagger-focus-before must be between 0 and 1"):
        EvolveConfig(dagger_focus=3, dagger_focus_before=1.5).validate()
