"""``vmc.evaluate`` on the real game, tiny budgets: the table and its files, seeds that reproduce, perturbation."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vmc.evaluate import EvaluateConfig, evaluate

pytestmark = pytest.mark.game


def test_table_files_and_grid_video(tiny_run: Path, tmp_path: Path):
    import imageio.v2 as imageio

    controller = tiny_run / "run" / "controller" / "best.pt"
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "vmc.evaluate", "--controller", str(controller), "--tracks", "lighthouse",
                        "zengarden", "--episodes", "2", "--max-steps", "20", "--workers", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    table = (out / "table.md").read_text()
    assert "| lighthouse | 0/2 |" in table and "| zengarden | 0/2 |" in table and table in r.stdout
    data = json.loads((out / "episodes.json").read_text())
    assert [(e["track"], e["seed"]) for e in data["episodes"]] == [("lighthouse", 0), ("lighthouse", 1), ("zengarden", 0),
                                                                    ("zengarden", 1)]
    assert all(e["end"] == "max_steps" or e["steps"] <= 20 for e in data["episodes"])
    assert all(0 <= e["brake_steps"] <= e["steps"] for e in data["episodes"])
    row = {r["track"]: r for r in data["rows"]}["lighthouse"]
    assert row["ai_steps"] > 300 and row["centreline"] > 900  # the references drive whole laps (no step limit)
    assert (out / "episodes.csv").read_text().splitlines()[0] == "track,seed,score,steps,end,lap_fraction,perturb_at,centreline_end,brake_steps"
    frames = imageio.mimread(out / "grid.mp4")
    assert len(frames) == 21 and frames[0].shape[1] == 2 * 64 * 3  # two tiles side by side, 20 steps + the start
    assert (out / "grid.png").is_file()


def test_same_seeds_same_table_and_perturb_changes_actions(tiny_run: Path, tmp_path: Path):
    from vmc.checkpoints import load_controller
    from vmc.racing import AgentRace, DaggerRace, Perturbation, ReferenceRace, racing_pool
    from vmc.sim.env import EnvConfig

    controller = str(tiny_run / "run" / "controller" / "best.pt")
    kw = dict(controller=controller, tracks=["lighthouse"], episodes=2, max_steps=25, workers=2, video=False)
    a = evaluate(EvaluateConfig(**kw, out=str(tmp_path / "a")), progress=False)
    b = evaluate(EvaluateConfig(**kw, out=str(tmp_path / "b")), progress=False)
    assert (tmp_path / "a" / "table.md").read_text().splitlines()[2:] == (tmp_path / "b" / "table.md").read_text().splitlines()[2:]
    assert a == b

    ck, models = load_controller(Path(controller))
    with racing_pool(1, models, EnvConfig(max_steps=25), action_noise=0.0) as pool:
        plain, perturbed, dagger, dagger_perturbed, teacher, crashed = pool.map([
            AgentRace(ck["params"], "lighthouse", 3), AgentRace(ck["params"], "lighthouse", 3, perturb=5, perturb_window=15),
            DaggerRace(ck["params"], "lighthouse", 3, beta=1.0), DaggerRace(ck["params"], "lighthouse", 3, 1.0, 5, 15),
            ReferenceRace("centreline", "lighthouse", max_steps=25, seed=3, perturb=5, perturb_window=15),
            DaggerRace(ck["params"], "lighthouse", 3, 1.0, 5, 15, crash=True)])
    differ = np.flatnonzero(np.any(plain.actions != perturbed.actions, axis=1))
    assert len(differ) and 10 <= differ[0] < 15  # the same race up to the random spell, which starts in [10, 15)
    np.testing.assert_array_equal(plain.actions[:differ[0]], perturbed.actions[:differ[0]])
    # A DAgger race's spell: the same seeded random actions drive, the centre-line driver still labels every step.
    spell = Perturbation(3, 5, 15)
    assert len(dagger_perturbed.y) == dagger_perturbed.steps and not np.isnan(dagger_perturbed.y).any()
    for t in spell.at:
        np.testing.assert_array_equal(dagger_perturbed.actions[t], spell.action(t))
    np.testing.assert_array_equal(dagger.actions[:spell.at[0]], dagger_perturbed.actions[:spell.at[0]])
    assert not np.array_equal(dagger.actions[spell.at[0]], dagger_perturbed.actions[spell.at[0]])
    # --dagger-crash: the same steps, one steering held at full throttle (random spells of a seed unchanged above).
    held = crashed.actions[spell.at.start:spell.at.stop]
    assert (held == held[0]).all() and held[0, 1] == 1.0 and held[0, 2] == 0.0 and abs(held[0, 0]) <= 1.0
    assert (held[0] == Perturbation(3, 5, 15, crash=True).action(spell.at.start)).all()
    # The centre-line driver meets the agent's spell for the same seed (evaluate's "same spells" column).
    spell = Perturbation(3, 5, 15)
    np.testing.assert_array_equal(teacher.actions[spell.at.start:spell.at.stop], perturbed.actions[spell.at.start:spell.at.stop])
    assert not np.array_equal(teacher.actions[:spell.at.start], perturbed.actions[:spell.at.start])

    rows = evaluate(EvaluateConfig(**kw, perturb=5, out=str(tmp_path / "p")), progress=False)
    episodes = json.loads((tmp_path / "p" / "episodes.json").read_text())["episodes"]
    window = int(0.8 * rows[0]["ai_steps"])  # the spell starts in the first 80 % of the AI's lap
    assert [e["perturb_at"] for e in episodes] == [Perturbation(k, 5, window).at.start for k in (0, 1)]
    assert all(e["centreline_end"] in ("lap", "stuck", "off_track", "max_steps") for e in episodes)
    assert rows[0]["centreline_spelled_laps"] == 0  # 25 steps are no lap
    assert "centre-line driver, same spells" in (tmp_path / "p" / "table.md").read_text()


def test_dagger_race_starts_where_it_is_sent_or_at_the_line(tiny_run: Path):
    """``DaggerRace(start=f)`` (``vmc.evolve --dagger-focus-before``) drives from lap fraction f; a place the game
    cannot start at (cocoa_temple's hops pass its cannon) gives a race from the line, not an error."""
    from vmc.checkpoints import load_controller
    from vmc.racing import DaggerRace, racing_pool
    from vmc.sim.env import EnvConfig

    ck, models = load_controller(tiny_run / "run" / "controller" / "best.pt")
    with racing_pool(1, models, EnvConfig(max_steps=25), action_noise=0.0) as pool:
        line, ahead, refused = pool.map([DaggerRace(ck["params"], "lighthouse", 3, beta=1.0),
                                         DaggerRace(ck["params"], "lighthouse", 3, beta=1.0, start=0.75),
                                         DaggerRace(ck["params"], "cocoa_temple", 3, beta=1.0, start=0.3)])
    assert line.start == 0.0 and line.lap_fraction < 0.1
    assert ahead.start == 0.75 and 0.75 < ahead.lap_fraction < 0.9 and len(ahead.y) == ahead.steps == 25
    assert not np.array_equal(ahead.x[0], line.x[0])  # another picture, so other latents
    assert refused.start == 0.0 and refused.lap_fraction < 0.1 and len(refused.y) == refused.steps
