"""Unit tests of the reward bookkeeping and track geometry (no game)."""

from pathlib import Path

import numpy as np
import pytest

from vmc.sim.track import LapProgress, TrackGeometry, race_tracks, reversible_tracks


def drive(progress: LapProgress, distances):
    return [progress.update(d) for d in distances]


def test_whole_lap_is_worth_1000_minus_step_cost():
    p = LapProgress(length=500.0)
    steps = np.linspace(5, 500, 100)
    rewards = drive(p, steps)
    assert p.lap_done
    assert sum(rewards) == pytest.approx(1000.0 - 0.1 * 100)
    assert p.score == pytest.approx(sum(rewards))
    assert p.steps == 100


def test_backwards_and_forwards_again_earns_nothing_twice():
    p = LapProgress(length=1000.0)
    drive(p, [0, 5, 10])
    before = p.best
    rewards = drive(p, [8, 6, 4, 6, 8, 10])
    assert p.best == pytest.approx(before)
    assert all(r == pytest.approx(-0.1) for r in rewards)
    r = p.update(12.0)
    assert r == pytest.approx(1000 * 2 / 1000 - 0.1)


def test_before_the_start_line_counts_as_zero():
    p = LapProgress(length=880.0)
    rewards = drive(p, [-879.9, -879.9, -870.0])  # the game's distance is negative before the line
    assert p.best == 0.0
    assert rewards == [pytest.approx(-0.1)] * 3


def test_forward_jump_is_not_progress():
    p = LapProgress(length=1000.0, max_gain_m=10.0)
    drive(p, [0, 5, 10])
    p.update(300.0)  # off the road the game snaps to a far piece of road
    assert p.best == pytest.approx(0.010)
    p.update(302.0)  # moving on from there counts only the real 2 m
    assert p.best == pytest.approx(0.012)
    p.update(12.0)  # back on the road: progress resumes from the real place
    p.update(14.0)
    assert p.best == pytest.approx(0.014)
    assert p.current == pytest.approx(14.0)


def test_a_whole_lap_counted_for_one_step_at_the_line_is_not_progress():
    p = LapProgress(length=1328.7)
    for d in [-1.7, -0.9, -0.5, 1328.7, 0.5, 1.3]:  # scotland in reverse, as the game reported it
        p.update(d, on_road=True)
    assert p.best == pytest.approx(1.3 / 1328.7)
    assert not p.lap_done
    p.update(60.0, on_road=True)  # two paths meeting (a jump of tens of metres) is still followed
    assert p.current == pytest.approx(60.0)


def test_rescue_backwards_does_not_pay_twice():
    p = LapProgress(length=1000.0)
    drive(p, [0, 5, 10, 15, 20])
    p.update(2.0)  # rescued 18 m back
    drive(p, [7, 12, 17])
    assert p.best == pytest.approx(0.020)
    drive(p, [22, 27])
    assert p.best == pytest.approx(0.027)


def test_signed_reward_pays_a_rescue_back_and_sums_to_the_same_lap():
    best, signed = LapProgress(length=100.0), LapProgress(length=100.0, signed=True)
    ds = [0, 5, 10, 15, 20, 2, 7, 12, 17, 22] + list(range(27, 101, 5)) + [100]  # rescued 18 m back at the 6th step
    r_best, r_signed = drive(best, ds[:9]), drive(signed, ds[:9])
    # the stuck rule counts steps without new best progress under either reward: 4 since the rescue
    assert signed.steps_since_progress == best.steps_since_progress == 4
    r_best, r_signed = r_best + drive(best, ds[9:]), r_signed + drive(signed, ds[9:])
    assert r_signed[5] == pytest.approx(1000 * -18 / 100 - 0.1)  # the rescue costs what it took back
    assert r_signed[6:9] == [pytest.approx(1000 * 5 / 100 - 0.1)] * 3  # and driving it again pays it back
    assert r_best[5:9] == [pytest.approx(-0.1)] * 4
    assert best.lap_done and signed.lap_done
    assert sum(r_signed) == pytest.approx(sum(r_best)) == pytest.approx(1000 - 0.1 * len(ds))
    # the score and the best progress are the best progress's under either reward
    assert signed.score == pytest.approx(best.score) and signed.best == best.best


def test_signed_reward_sums_to_the_same_lap_over_the_games_jumps():
    # on the road, with a half lap counted for one step at the line, a jump where two paths meet, a spell off the
    # road and a rescue back: the signed steps still sum to the lap
    steps = ([(d, True) for d in (-1.0, -0.5, 500.0, 0.5)] + [(d, True) for d in np.arange(2.0, 100.0, 4.0)]
             + [(160.0, True), (170.0, False), (250.0, False), (120.0, True)]
             + [(d, True) for d in np.arange(124.0, 500.0, 6.0)] + [(500.0, True)])
    best, signed = LapProgress(length=500.0), LapProgress(length=500.0, signed=True)
    r_best = [best.update(d, on_road=on) for d, on in steps]
    r_signed = [signed.update(d, on_road=on) for d, on in steps]
    assert best.lap_done and signed.lap_done
    assert min(r_signed) < -0.1  # the rescue from 170 m back to 120 m
    assert sum(r_signed) == pytest.approx(sum(r_best)) == pytest.approx(1000 - 0.1 * len(steps))


def test_signed_reward_ends_where_the_kart_is():
    p = LapProgress(length=1000.0, signed=True)
    rewards = drive(p, [0, 10, 20, 30, 5])  # rescued back to 5 m and the episode ends there
    assert sum(rewards) == pytest.approx(1000 * 5 / 1000 - 0.5)
    assert p.score == pytest.approx(1000 * 30 / 1000 - 0.5)


def test_unknown_reward_is_refused():
    from vmc.sim.env import EnvConfig

    with pytest.raises(ValueError, match="unknown reward 'max'; choose one of best, signed"):
        EnvConfig(reward="max")


def test_stuck_counter_counts_steps_without_new_progress():
    p = LapProgress(length=1000.0)
    drive(p, [0, 1, 2])
    assert p.steps_since_progress == 0
    drive(p, [2.0, 2.01, 1.0, 2.0])
    assert p.steps_since_progress == 4
    p.update(3.0)
    assert p.steps_since_progress == 0


def test_reset_clears_everything():
    p = LapProgress(length=100.0)
    drive(p, [0, 10, 20])
    p.reset()
    assert (p.best, p.score, p.steps, p.steps_since_progress) == (0.0, 0.0, 0, 0)


def square_track() -> TrackGeometry:
    # A 40 m x 40 m square, counter-clockwise in (x, z), 8 m wide.
    corners = np.array([[0, 0, 0], [40, 0, 0], [40, 0, 40], [0, 0, 40]], float)
    start, end = corners, np.roll(corners, -1, axis=0)
    dist = np.stack([np.arange(4) * 40.0, np.arange(1, 5) * 40.0], axis=1)
    return TrackGeometry("square", 160.0, start, end, np.full(4, 8.0), dist)


def test_point_at_interpolates_and_wraps():
    t = square_track()
    np.testing.assert_allclose(t.point_at(20.0), [20, 0, 0])
    np.testing.assert_allclose(t.point_at(60.0), [40, 0, 20])
    np.testing.assert_allclose(t.point_at(160.0 + 20.0), [20, 0, 0])


def test_lateral_offset_and_off_track():
    t = square_track()
    dist, i = t.lateral_offset(np.array([20.0, 0.0, 3.0]))
    assert dist == pytest.approx(3.0) and i == 0
    assert not t.beyond_road(*t.lateral_offset(np.array([20.0, 0.0, 3.0])), margin=2.0)
    assert t.beyond_road(*t.lateral_offset(np.array([20.0, 0.0, 20.0])), margin=2.0)  # the middle of the square


def test_race_tracks_reads_track_flags(tmp_path: Path):
    for name, flags in {"loop": "", "arena1": 'arena = "Y"', "goal": 'soccer="Y"', "intro": 'cutscene = "Y" internal="Y"'}.items():
        (tmp_path / "tracks" / name).mkdir(parents=True)
        (tmp_path / "tracks" / name / "track.xml").write_text(f'<?xml version="1.0"?>\n<track name="{name}" {flags}\n>\n</track>\n')
    assert race_tracks(tmp_path) == ["loop"]
    (tmp_path / "tracks" / "loop2").mkdir()
    (tmp_path / "tracks" / "loop2" / "track.xml").write_text('<track name="loop2"\n reverse = "Y"\n>\n</track>\n')
    assert reversible_tracks(tmp_path) == ["loop2"]
