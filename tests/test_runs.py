"""Run folders: resumes that check what they resume, checkpoints safe to load and to move, one-line errors."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vmc.checkpoints import load_checkpoint, save_checkpoint
from vmc.errors import CheckpointError, ConfigMismatch
from vmc.runs import check_resume, differences, run_name, write_config


def main_refused(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """``vmc.main``'s parse of ``argv`` refused (exit 2); its one-line message."""
    from vmc import cli
    from vmc.main import MainConfig

    with pytest.raises(SystemExit) as exit_:
        cli.parse(MainConfig, argv, "vmc.main")
    assert exit_.value.code == 2
    return capsys.readouterr().err

ROOT = Path(__file__).resolve().parents[1]


class _Payload:
    """Pickles to a call of ``open(marker, 'w')``: loading it with plain pickle would create the marker."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def evil_checkpoint(path: Path, marker: Path) -> Path:
    torch.save({"kind": "controller", "model": _Payload(marker)}, path)
    return path


def vmc(*args: str, cwd: Path = ROOT, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "250"}  # help boxes unwrapped
    return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True, cwd=cwd, timeout=timeout, env=env)


def test_differences_name_nested_fields_and_skip_free_ones():
    old = {"tracks": ["lighthouse"], "epochs": 3, "model": {"z_dim": 32}}
    new = {"tracks": ["zengarden"], "epochs": 9, "model": {"z_dim": 16}}
    assert differences(old, new, free={"epochs"}) == ["model.z_dim: 32 → 16", "tracks: ['lighthouse'] → ['zengarden']"]
    with pytest.raises(ConfigMismatch, match=r"runs/x/vae.last.pt was made with a different config \(model.z_dim"):
        check_resume(Path("runs/x/vae.last.pt"), old, new, free={"epochs"})
    check_resume(Path("x"), old, {**old, "epochs": 99}, free={"epochs"})  # a free field may differ
    # An option added since (absent from the old record) is no difference at its default, and one elsewhere.
    grown = {**old, "model": {"z_dim": 32, "teacher_outputs": 0}}
    check_resume(Path("x"), old, grown, defaults={"model": {"z_dim": 32, "teacher_outputs": 0}})
    assert differences(old, {**old, "model": {"z_dim": 32, "teacher_outputs": 3}},
                       defaults={"model": {"teacher_outputs": 0}}) == ["model.teacher_outputs: '(absent)' → 3"]


def test_tracks_presets_train_one_or_both_ways_and_evaluate_forward():
    """``tracks`` collects and trains on its eight tracks; ``tracks-both-ways`` also on their reversed courses, in a
    run folder of its own; both evaluate on the tracks as named plus the held-out ones, never trained on."""
    from vmc.main import HELD_OUT_TRACKS, TRAIN_TRACKS, MainConfig

    one = MainConfig(preset="tracks")
    assert one.training_tracks == one.courses == TRAIN_TRACKS and one.run.name == "8tracks-tracks"
    both = MainConfig(preset="tracks-both-ways")
    assert both.training_tracks == TRAIN_TRACKS
    assert both.courses == TRAIN_TRACKS + [f"{t}-reverse" for t in TRAIN_TRACKS]
    assert both.run.name == "8tracks-tracks-both-ways" and both.data_path == Path("data/8tracks-tracks-both-ways")
    assert not set(HELD_OUT_TRACKS) & {t.removesuffix("-reverse") for t in both.courses}
    small = MainConfig(tracks=["zengarden"])
    assert small.courses == ["zengarden"] and small.run.name == "zengarden-small"


def test_another_seed_is_another_run_of_the_same_recipe():
    """``--seed N`` keeps its run and data apart from seed 0's, which keeps the names it always had."""
    from vmc import cli
    from vmc.main import MainConfig

    zero, one = MainConfig(teacher_free=True), MainConfig(teacher_free=True, seed=1)
    assert zero.run.name == "lighthouse-small-teacher-free" and one.run.name == "lighthouse-small-teacher-free-seed1"
    assert one.data_path == Path("data/lighthouse-small-teacher-free-seed1") != zero.data_path
    assert cli.parse(MainConfig, ["--teacher-free", "--seed", "2"], "vmc.main").run.name.endswith("-teacher-free-seed2")


def test_keep_mean_is_the_teacher_free_recipes(capsys: pytest.CaptureFixture[str]):
    """``vmc.main --keep mean`` reaches ``vmc.iterate``'s rounds; without ``--teacher-free`` it is one clear line."""
    from vmc import cli
    from vmc.main import MainConfig

    assert cli.parse(MainConfig, ["--teacher-free", "--keep", "mean"], "vmc.main").keep == "mean"
    assert "use it with --teacher-free" in main_refused(["--keep", "mean"], capsys)


def test_signed_reward_is_the_teacher_free_recipes_and_names_its_run(capsys: pytest.CaptureFixture[str]):
    """``vmc.main --reward signed`` reaches the collections of the teacher-free recipe and gets its own run folder;
    without ``--teacher-free``, or with an unknown reward, it is one clear line."""
    from vmc import cli
    from vmc.main import MainConfig

    cfg = cli.parse(MainConfig, ["--teacher-free", "--reward", "signed"], "vmc.main")
    assert cfg.reward == "signed" and cfg.run.name == "lighthouse-small-teacher-free-signed"
    assert cfg.data_path.name == "lighthouse-small-teacher-free-signed"
    assert "use it with --teacher-free" in main_refused(["--reward", "signed"], capsys)
    assert "signed" in main_refused(["--teacher-free", "--reward", "max"], capsys)


def test_short_fitness_reaches_iterate_and_names_its_run(capsys: pytest.CaptureFixture[str]):
    """``vmc.main --fitness short`` gives the rounds' CMA-ES short dream rollouts from recorded states, in a run
    folder of its own; the preset's whole races otherwise; without ``--teacher-free`` it is one clear line."""
    from vmc import cli
    from vmc.main import MainConfig

    cfg = cli.parse(MainConfig, ["--teacher-free", "--keep", "mean", "--fitness", "short"], "vmc.main")
    it = cfg.iterate_config(workers=1)
    assert (it.rollouts, it.dream_steps, it.race_start, it.keep) == (64, 50, 0.0, "mean")
    assert cfg.run.name == "lighthouse-small-teacher-free-short" and it.data == "data/lighthouse-small-teacher-free-short"
    races = MainConfig(teacher_free=True, rounds=6).iterate_config(workers=2)
    assert (races.rollouts, races.dream_steps, races.race_start, races.rounds, races.workers) == (16, 400, 0.5, 6, 2)
    assert races.evolve_config(1, Path("r"), Path("v"), Path("m"), Path("l"), "zeros").dream_steps == 400
    assert "use it with --teacher-free" in main_refused(["--fitness", "short"], capsys)


def test_dream_noise_reaches_the_rounds_evolve_and_names_its_run(capsys: pytest.CaptureFixture[str]):
    """``vmc.main --dream-noise`` is CMA-ES's noise in the dream of every round, in a run folder of its own; the
    real races' noise stays the exploration noise; without ``--teacher-free`` it is one clear line."""
    from vmc import cli
    from vmc.main import MainConfig

    cfg = cli.parse(MainConfig, ["--teacher-free", "--keep", "mean", "--dream-noise", "0.2"], "vmc.main")
    ev = cfg.iterate_config(workers=1).evolve_config(2, Path("r"), Path("v"), Path("m"), Path("l"), "zeros")
    assert (ev.dream_noise, ev.action_noise) == (0.2, 0.1)
    assert cfg.run.name == "lighthouse-small-teacher-free-dream-noise0.2"
    assert MainConfig(teacher_free=True).iterate_config(workers=1).dream_noise is None
    stuck = cli.parse(MainConfig, ["--teacher-free", "--dream-noise", "0.2", "--dream-done", "stuck"], "vmc.main")
    assert stuck.iterate_config(workers=1).evolve_config(2, Path("r"), Path("v"), Path("m"), Path("l"),
                                                         "zeros").dream_done == "stuck"
    assert stuck.run.name == "lighthouse-small-teacher-free-dream-noise0.2-dream-done-stuck"
    assert ev.dream_done == "head"
    assert "use it with --teacher-free" in main_refused(["--dream-noise", "0.2"], capsys)


def test_episodes_sizes_the_first_collection_and_names_its_run(capsys: pytest.CaptureFixture[str]):
    """``vmc.main --episodes N`` replaces the preset's collection size (the teacher-free recipe's random data) in run and
    data folders of their own; the rest of the preset stays; below 0 it is one clear line."""
    from vmc import cli
    from vmc.main import PRESETS, MainConfig

    cfg = cli.parse(MainConfig, ["--teacher-free", "--episodes", "120"], "vmc.main")
    assert cfg.sizes.episodes == 120 and cfg.sizes.max_steps == PRESETS["small"].max_steps
    assert cfg.run.name == "lighthouse-small-teacher-free-episodes120" == cfg.data_path.name
    assert MainConfig().sizes == PRESETS["small"] and MainConfig().run.name == "lighthouse-small"
    assert "at least 0" in main_refused(["--episodes", "-1"], capsys)


def test_collect_noise_reaches_only_the_rounds_collections(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """``vmc.main --collect-noise/--collect-correlation`` set the noise of the rounds' own races in a run folder of
    its own; the real and dream evaluations keep the exploration noise; without ``--teacher-free``: one clear line."""
    from vmc import cli
    from vmc.main import MainConfig

    cfg = cli.parse(MainConfig, ["--teacher-free", "--collect-noise", "0.2", "--collect-correlation", "0.9"], "vmc.main")
    assert cfg.run.name == "lighthouse-small-teacher-free-collect-noise0.2-corr0.9"
    it = cfg.iterate_config(workers=1)
    controller = tmp_path / "best.pt"
    controller.write_bytes(b"")
    collect = it.collect_config(tmp_path / "data", 56, str(controller))
    assert (collect.controller_noise, collect.controller_correlation, collect.episodes) == (0.2, 0.9, 56)
    ev = it.evolve_config(2, Path("r"), Path("v"), Path("m"), Path("l"), "zeros")
    assert (ev.action_noise, ev.dream_noise) == (0.1, None)
    plain = MainConfig(teacher_free=True).iterate_config(workers=1).collect_config(tmp_path, 56, str(controller))
    assert (plain.controller_noise, plain.controller_correlation) == (0.1, 0.0)
    assert "use them with --teacher-free" in main_refused(["--collect-noise", "0.2"], capsys)
    assert "[0, 1)" in main_refused(["--teacher-free", "--collect-correlation", "1"], capsys)


def test_until_laps_stops_the_rounds_at_the_first_that_laps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]):
    """``--until-laps K``: the rounds stop after the first whose noisy races lap at least K times per track and whose
    noise-free races all lap; rows of an older version (no noise-free count) never stop them."""
    from vmc import iterate
    from vmc.main import MainConfig

    def row(k: int, laps: int, clean: int | None) -> dict:
        noisy = None if clean is None else {"lighthouse": laps - clean}
        return {"round": k, "episodes": 40, "steps": 1000, "dream": 900.0, "dream_std": 1.0, "real": 900.0,
                "real_std": 1.0, "noise_free": 950.0, "laps": laps, "races": 11, "noise_free_laps": clean,
                "noisy_laps_per_track": noisy, "seconds": 1.0, "points": []}

    assert iterate.lapped(row(1, 10, 1), 9, 1) and iterate.lapped(row(1, 11, 1), 10, 1)
    assert not iterate.lapped(row(1, 9, 1), 9, 1)        # 8 noisy laps
    assert not iterate.lapped(row(1, 10, 0), 9, 1)       # the noise-free race did not lap
    assert not iterate.lapped(row(1, 11, None), 9, 1)    # a round from before the count
    two = {"noise_free_laps": 2, "noisy_laps_per_track": {"a": 10, "b": 9}}
    assert iterate.lapped(two, 9, 2) and not iterate.lapped({**two, "noisy_laps_per_track": {"a": 10, "b": 8}}, 9, 2)
    made = {1: row(1, 3, 0), 2: row(2, 11, None), 3: row(3, 10, 1), 4: row(4, 11, 1)}
    monkeypatch.setattr(iterate, "run_round", lambda cfg, k, previous: made[k])
    (tmp_path / "data").mkdir()
    cfg = iterate.IterateConfig(run=str(tmp_path / "run"), data=str(tmp_path / "data"), rounds=4, until_laps=9)
    assert [r["round"] for r in iterate.iterate(cfg)] == [1, 2, 3]
    assert (tmp_path / "run" / "iterate" / "rounds.csv").read_text().count("\n") == 4  # header and three rounds
    assert len(iterate.iterate(iterate.IterateConfig(run=cfg.run, data=cfg.data, rounds=4))) == 4  # resumed, no rule
    main = MainConfig(teacher_free=True, until_laps=9)
    assert main.iterate_config(workers=1).until_laps == 9 and main.run.name == MainConfig(teacher_free=True).run.name
    assert "use it with --teacher-free" in main_refused(["--until-laps", "9"], capsys)
    with pytest.raises(ValueError, match="until-laps"):
        iterate.IterateConfig(run=cfg.run, data=cfg.data, until_laps=11)
    assert "debug preset's 1 evaluation races" in main_refused(["--teacher-free", "--preset", "debug", "--until-laps", "2"], capsys)


def test_iterate_refuses_a_base_collection_of_the_other_reward(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    from vmc import cli
    from vmc.iterate import IterateConfig

    (tmp_path / "manifest.json").write_text(json.dumps({"collect_config": {"policy": "brownian"}}))
    assert cli.parse(IterateConfig, ["--data", str(tmp_path)], "vmc.iterate").reward == "best"
    with pytest.raises(SystemExit) as exit_:
        cli.parse(IterateConfig, ["--data", str(tmp_path), "--reward", "signed"], "vmc.iterate")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "recorded the 'best' reward" in err and len(err.strip().splitlines()) == 1


def test_iterate_refuses_a_run_whose_models_learnt_the_other_reward(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]):
    """Round 1 dreams in the run's own MDN-RNN: a run whose latents came from a collection of the other reward is
    refused in one line, even where the base collection named by ``--data`` has the right one."""
    import h5py

    from vmc import cli
    from vmc.iterate import IterateConfig
    from vmc.latents import FORMAT

    old, new, run = tmp_path / "old", tmp_path / "new", tmp_path / "run"
    for folder, reward in ((old, "best"), (new, "signed")):
        folder.mkdir()
        (folder / "manifest.json").write_text(json.dumps({"collect_config": {"reward": reward}}))
    run.mkdir()
    with h5py.File(run / "latents.h5", "w") as f:
        f.attrs.update(vmc_format=FORMAT, data=str(old))
    with pytest.raises(SystemExit) as exit_:
        cli.parse(IterateConfig, ["--run", str(run), "--data", str(new), "--reward", "signed"], "vmc.iterate")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and f"learnt from {old}" in err and len(err.strip().splitlines()) == 1
    with h5py.File(run / "latents.h5", "a") as f:
        f.attrs["data"] = str(new)
    assert cli.parse(IterateConfig, ["--run", str(run), "--data", str(new), "--reward", "signed"],
                     "vmc.iterate").reward == "signed"


def test_rounds_are_the_teacher_free_recipes_and_free_on_resume(capsys: pytest.CaptureFixture[str]):
    """``vmc.main --rounds N`` sets the teacher-free recipe's rounds (0: the preset's) and may change when a run
    goes on; without ``--teacher-free`` it is one clear line."""
    from vmc import cli
    from vmc.main import MainConfig

    assert cli.parse(MainConfig, ["--teacher-free", "--rounds", "16"], "vmc.main").rounds == 16
    assert "rounds" in MainConfig.RESUME_FREE
    assert "use it with --teacher-free" in main_refused(["--rounds", "16"], capsys)


def test_run_config_is_refused_when_changed(tmp_path: Path):
    write_config(tmp_path / "r", {"tracks": ["lighthouse"], "workers": 2}, free={"workers"})
    write_config(tmp_path / "r", {"tracks": ["lighthouse"], "workers": 8}, free={"workers"})  # same run
    with pytest.raises(ConfigMismatch, match="config.json was made with a different config .*tracks"):
        write_config(tmp_path / "r", {"tracks": ["zengarden"], "workers": 2}, free={"workers"})
    write_config(tmp_path / "r", {"tracks": ["zengarden"], "workers": 2}, force=True)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["config"]["tracks"] == ["zengarden"] and "vmc_version" in saved
    assert run_name(["lighthouse"], "debug") == "lighthouse-debug" and run_name(["a", "b", "c"], "tracks") == "3tracks-tracks"


def test_loading_a_crafted_checkpoint_runs_no_code(tmp_path: Path):
    marker = tmp_path / "ran"
    path = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused.*could run code"):
        load_checkpoint(path, "controller")
    assert not marker.exists()
    save_checkpoint(tmp_path / "ok.pt", "vae", {"model": {"w": torch.ones(2)}, "epoch": 1}, {"lr": 0.1})
    ck = load_checkpoint(tmp_path / "ok.pt", "vae")
    assert ck["epoch"] == 1 and ck["config"] == {"lr": 0.1} and len(ck["fingerprint"]) == 16
    with pytest.raises(CheckpointError, match="not a mdn checkpoint"):
        load_checkpoint(tmp_path / "ok.pt", "mdn")


def test_bad_values_fail_with_one_line():
    r = vmc("vmc.evolve", "--workers", "-3")
    assert r.returncode == 2 and r.stderr.strip() == "python -m vmc.evolve: error: --workers must be at least 0, got -3"
    r = vmc("vmc.collect", "--episodes", "0")
    assert r.returncode == 2 and r.stderr.strip().endswith("--episodes must be at least 1, got 0")
    r = vmc("vmc.evaluate", "--tracks", "nowhere")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "unknown track 'nowhere'" in r.stderr and "lighthouse" in r.stderr and "zengarden" in r.stderr


def test_every_option_has_help():
    for stage in ("collect", "train_vae", "train_mdn", "evolve", "play", "evaluate", "iterate", "main", "dream"):
        r = vmc(f"vmc.{stage}", "--help")
        assert r.returncode == 0, r.stderr
        assert "--run" in r.stdout or "--controller" in r.stdout or "--out" in r.stdout
    evolve_help = vmc("vmc.evolve", "--help").stdout
    for option, words in (("--popsize", "CMA-ES population"), ("--dagger-rounds", "DAgger rounds"),
                          ("--tracks-per-generation", "seeded subset")):
        assert option in evolve_help and words in evolve_help


@pytest.mark.game
def test_crafted_checkpoint_refused_by_play_and_evolve(tmp_path: Path):
    marker = tmp_path / "ran"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    r = vmc("vmc.play", "--controller", str(evil), "--out", str(tmp_path / "lap.mp4"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "could run code" in r.stderr
    r = vmc("vmc.evolve", "--vae", str(evil), "--run", str(tmp_path / "run"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "could run code" in r.stderr
    assert not marker.exists()


@pytest.mark.game
def test_each_stage_refuses_a_changed_config_on_resume(tiny_run: Path, tmp_path: Path):
    from vmc import evolve, train_mdn, train_vae
    from vmc.collect import CollectConfig, Collector
    from vmc.models import MDNRNNConfig, VAEConfig

    run = tmp_path / "run"
    shutil.copytree(tiny_run / "run", run)
    data = str(tiny_run / "data")
    vae = dict(data=data, run=str(run), epochs=1, model=VAEConfig(z_dim=8, channels=(8, 16, 16, 32)), resume=True)
    train_vae.train(train_vae.TrainVAEConfig(**vae), progress=False)  # same config: resumes (nothing left to do)
    with pytest.raises(ConfigMismatch, match=r"vae.last.pt was made with a different config \(lr: 0.001 → 0.01\)"):
        train_vae.train(train_vae.TrainVAEConfig(**{**vae, "lr": 0.01}), progress=False)
    mdn = dict(run=str(run), epochs=1, steps_per_epoch=3, seq_len=8, batch_size=4, resume=True,
               model=MDNRNNConfig(z_dim=8, hidden=16, gaussians=2))
    train_mdn.train(train_mdn.TrainMDNConfig(**mdn), progress=False)
    with pytest.raises(ConfigMismatch, match=r"mdn.last.pt was made with a different config \(seq_len: 8 → 6\)"):
        train_mdn.train(train_mdn.TrainMDNConfig(**{**mdn, "seq_len": 6}), progress=False)
    ev = dict(run=str(run), workers=1, popsize=4, rollouts=1, generations=1, max_steps=20, eval_every=0, init="fit",
              resume=True)
    with pytest.raises(ConfigMismatch, match=r"evolve.pt was made with a different config \(tracks: \['lighthouse'\] → "
                                             r"\['zengarden'\]\)"):
        evolve.evolve(evolve.EvolveConfig(**{**ev, "tracks": ["zengarden"]}), progress=False)
    # Another MDN-RNN under the same name: the controller's models changed, so its evolution is not resumed.
    train_mdn.train(train_mdn.TrainMDNConfig(**{**mdn, "seed": 5, "resume": False, "force": True}), progress=False)
    with pytest.raises(ConfigMismatch, match=r"built_on.mdn"):
        evolve.evolve(evolve.EvolveConfig(**ev), progress=False)
    with pytest.raises(ConfigMismatch, match=r"manifest.json was made with a different config \(max_steps: 30 → 40\)"):
        Collector(CollectConfig(out=data, episodes=4, workers=1, max_steps=40)).run(progress=False)


@pytest.mark.game
def test_moved_controller_still_plays(tiny_run: Path, tmp_path: Path):
    elsewhere = tmp_path / "handed-over"
    elsewhere.mkdir()
    shutil.copy(tiny_run / "run" / "controller" / "best.pt", elsewhere / "agent.pt")
    moved = tmp_path / "moved-run"
    shutil.copytree(tiny_run / "run", moved)
    shutil.rmtree(moved / "controller")
    (moved / "vae.pt").unlink()  # the models it was made with are gone from where they were
    r = vmc("vmc.play", "--controller", str(elsewhere / "agent.pt"), "--out", str(elsewhere / "lap.mp4"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((elsewhere / "lap.json").read_text())
    assert summary["track"] == "lighthouse" and summary["steps"] >= 1 and (elsewhere / "lap.mp4").stat().st_size > 0


@pytest.mark.game
def test_two_experiments_with_the_readme_commands(tmp_path: Path):
    """``./run.sh --preset debug`` and ``./run.sh main --preset debug --tracks zengarden hacienda`` leave their own
    run folders, each with its own models and the video of its own (first) track; a changed config in an existing
    folder is refused with one line."""
    checkout = tmp_path / "vmc"
    top = {".venv", ".git", "runs", "data", ".pytest_cache"}
    shutil.copytree(ROOT, checkout, ignore=lambda d, names: [n for n in names if n == "__pycache__" or (Path(d) == ROOT and n in top)])
    (checkout / "data").mkdir()
    # The set-up is done (./run.sh test did it): the copy's ./run.sh finds it and goes on. A virtualenv set up for
    # another pyproject.toml would be reinstalled from the copy, which is removed after the test.
    stamp = (ROOT / ".venv" / ".vmc-installed").read_text().split()[0]
    if stamp != hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()[:16]:
        pytest.fail("the virtualenv was set up for another pyproject.toml: run ./run.sh setup first")
    (checkout / ".venv").symlink_to(ROOT / ".venv")

    def run_sh(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["./run.sh", *args], capture_output=True, text=True, cwd=checkout, timeout=1500)

    for args, name, tracks in ((("--preset", "debug"), "lighthouse-debug", ["lighthouse"]),
                               (("main", "--preset", "debug", "--tracks", "zengarden", "hacienda"), "2tracks-debug",
                                ["zengarden", "hacienda"])):
        r = run_sh(*args)
        assert r.returncode == 0, r.stderr[-3000:]
        run = checkout / "runs" / name
        lap = json.loads((run / "best_lap.json").read_text())
        assert lap["track"] == tracks[0] and (run / "best_lap.mp4").stat().st_size > 0
        assert json.loads((run / "config.json").read_text())["config"]["tracks"] == tracks
        assert (run / "vae.pt").is_file() and (run / "mdn.pt").is_file() and (run / "controller" / "best.pt").is_file()
        assert load_checkpoint(run / "controller" / "best.pt", "controller")["tracks"] == tracks
        assert json.loads((checkout / "data" / name / "manifest.json").read_text())["tracks"] == sorted(tracks)
        assert sorted(json.loads((run / "references.json").read_text())) == sorted(tracks)
    r = run_sh("--preset", "debug", "--tracks", "zengarden", "--name", "lighthouse-debug")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "config.json was made with a different config" in r.stderr and "tracks" in r.stderr


def test_dream_vs_real_separates_the_rounds_level_from_the_ranking_within_a_round(tmp_path: Path):
    """Two rounds whose levels agree (dream and real both higher in round 2) but whose candidates are ranked the
    wrong way round within each: r over all candidates is high, its mean within a round -1."""
    import csv

    from vmc.iterate import dream_vs_real

    def points(k: int, dream: list[float], real: list[float]) -> list[dict]:
        return [{"round": k, "generation": 20, "candidate": f"c{i}", "dream": a, "dream_pick": "", "real": b}
                for i, (a, b) in enumerate(zip(dream, real))]

    rows = [{"points": points(1, [100, 110, 120], [30, 20, 10])},
            {"points": points(2, [800, 810, 820], [900, 890, 880])},
            {"points": points(3, [500], [500])}]  # one candidate: no ranking to measure
    r, within = dream_vs_real(rows, tmp_path)
    assert r > 0.95 and within == pytest.approx(-1.0)
    assert len(list(csv.DictReader(open(tmp_path / "dream_vs_real.csv")))) == 7
    assert (tmp_path / "dream_vs_real.png").stat().st_size > 0
    assert dream_vs_real([{"points": points(1, [1, 2], [3, 4])}], tmp_path) == (None, None)


def test_a_rounds_cma_es_dreams_with_the_iterate_configs_sizes(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """Round k's ``vmc.evolve`` config takes the run's dream sizes (short rollouts from recorded states with
    ``--dream-steps 50 --race-start 0``), scores in the dream only, evaluates at its end and seeds by round; a share
    outside [0, 1] is refused in one line."""
    from vmc import cli
    from vmc.iterate import IterateConfig

    cfg = cli.parse(IterateConfig, ["--data", str(tmp_path), "--dream-steps", "50", "--race-start", "0",
                                    "--generations", "7", "--keep", "mean", "--seed", "3"], "vmc.iterate")
    rd = tmp_path / "round-2"
    ecfg = cfg.evolve_config(2, rd, rd / "vae.pt", rd / "mdn.pt", rd / "latents.h5", "zeros")
    assert (ecfg.dream, ecfg.dream_steps, ecfg.race_start, ecfg.generations) == (True, 50, 0.0, 7)
    assert (ecfg.eval_every, ecfg.keep, ecfg.seed, ecfg.init, ecfg.run) == (7, "mean", 5, "zeros", str(rd))
    assert not ecfg.resume
    with pytest.raises(SystemExit) as exit_:
        cli.parse(IterateConfig, ["--data", str(tmp_path), "--race-start", "1.5"], "vmc.iterate")
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "--race-start must be between 0 and 1, got 1.5" in err
