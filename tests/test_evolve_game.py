"""The controller stage on the real game: CMA-ES generations, kill -9 and resume, the rendered lap."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vmc import evolve
from vmc.checkpoints import load_checkpoint
from vmc.models import MDNRNNConfig, VAEConfig

pytestmark = pytest.mark.game


@pytest.fixture(scope="module")
def world(tiny_run: Path) -> Path:
    """The session's tiny run folder (real collection in ``../data``, VAE, latent file, MDN-RNN). Tests evolve into
    run folders of their own, with its models."""
    root = tiny_run / "run"
    assert (root / "vae.pt").is_file() and (root / "mdn.pt").is_file() and (root / "latents.h5").is_file()
    return root


def cli(world: Path, run: Path, generations: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vmc.evolve", "--vae", str(world / "vae.pt"), "--mdn", str(world / "mdn.pt"),
            "--latents", str(world / "latents.h5"), "--run", str(run), "--workers", "2", "--popsize", "4",
            "--rollouts", "1", "--max-steps", "15", "--eval-every", "2", "--eval-rollouts", "1", "--dagger-rounds", "2",
            "--dagger-episodes", "2",
            "--generations", str(generations), *extra]


def test_two_generations_write_logs_and_best(world: Path, tmp_path: Path):
    cfg = evolve.EvolveConfig(vae=str(world / "vae.pt"), mdn=str(world / "mdn.pt"), latents=str(world / "latents.h5"),
                              run=str(tmp_path / "r"), workers=2, popsize=4, rollouts=2, generations=2, max_steps=15,
                              eval_every=2, eval_rollouts=2, dagger_rounds=2, dagger_episodes=2)
    summary = evolve.evolve(cfg, progress=False)
    out = tmp_path / "r" / "controller"
    ck = load_checkpoint(out / "evolve.pt", "evolve")
    assert [h["generation"] for h in ck["history"]] == [1, 2] and ck["generation"] == 2
    assert len(ck["best_params"]) == (8 + 16) * 3 + 3
    # DAgger's starting point is evaluated before generation 1, then the best/mean at generation 2
    assert [e["generation"] for e in summary["evals"]] == [0, 2] and summary["evals"][0]["which"] == "initial"
    rows = (out / "log.csv").read_text().strip().splitlines()
    assert rows[0].startswith("generation,best,mean,worst") and len(rows) == 3
    assert (out / "curve.png").is_file() and (out / "best.pt").is_file()
    assert load_checkpoint(out / "best.pt", "controller")["fitness"] == pytest.approx(ck["best_eval"])
    assert summary["evals"][1]["which"] in ("best", "mean")


def test_keep_mean_keeps_the_cma_es_mean_whatever_the_dream_says(world: Path, tmp_path: Path):
    """``--keep mean`` in a dream run: ``best.pt`` is the CMA-ES mean of the latest evaluation, also where the
    dream scored another candidate higher (which the default rule would have kept)."""
    from vmc.checkpoints import load_controller

    cfg = evolve.EvolveConfig(vae=str(world / "vae.pt"), mdn=str(world / "mdn.pt"), latents=str(world / "latents.h5"),
                              run=str(tmp_path / "r"), workers=2, popsize=4, rollouts=2, generations=4, max_steps=15,
                              eval_every=2, eval_rollouts=1, dream=True, init="zeros", dream_steps=10,
                              eval_population=3, dream_check_rollouts=3, keep="mean",
                              dream_device="cpu")  # the dream's numbers on CPU, for the last assertion
    evals = evolve.evolve(cfg, progress=False)["evals"]
    assert [(e["generation"], e["which"]) for e in evals] == [(0, "initial"), (2, "mean"), (4, "mean")]
    best = np.asarray(load_controller(tmp_path / "r" / "controller" / "best.pt")[0]["params"])
    assert np.array_equal(best, np.asarray(evals[-1]["candidates"]["mean"]["params"]))
    assert any(max(c["dream_mean"] for c in e["candidates"].values()) > e["candidates"]["mean"]["dream_mean"]
               for e in evals[1:])


def test_dream_pick_steps_pick_best_pt_by_short_dream_rollouts(world: Path, tmp_path: Path):
    """``--dream-pick-steps``: every evaluated candidate gets a short-rollout dream score, and ``best.pt`` is the
    candidate with the highest one (of the evaluation flagged ``saved``)."""
    from vmc.checkpoints import load_controller

    cfg = evolve.EvolveConfig(vae=str(world / "vae.pt"), mdn=str(world / "mdn.pt"), latents=str(world / "latents.h5"),
                              run=str(tmp_path / "r"), workers=2, popsize=4, rollouts=2, generations=2, max_steps=15,
                              eval_every=2, eval_rollouts=1, dream=True, init="zeros", dream_steps=10,
                              eval_population=3, dream_check_rollouts=3, dream_pick_steps=5, dream_pick_rollouts=20,
                              dream_device="cpu")
    evals = evolve.evolve(cfg, progress=False)["evals"]
    for e in evals:
        cands = e["candidates"]
        assert all(np.isfinite(c["dream_pick"]) for c in cands.values())
        assert e["which"] == max(cands, key=lambda n: cands[n]["dream_pick"])
    kept = [e for e in evals if e["saved"]][-1]
    best = np.asarray(load_controller(tmp_path / "r" / "controller" / "best.pt")[0]["params"])
    assert np.array_equal(best, np.asarray(kept["candidates"][kept["which"]]["params"]))


def test_a_controller_with_hidden_units_is_fitted_evolved_and_saved(world: Path, tmp_path: Path):
    """``--controller-hidden`` with ``--controller-still``: DAgger fits it on [z, h, s], CMA-ES (diagonal) searches
    its parameters, ``best.pt`` keeps the stillness input and drives."""
    from vmc.checkpoints import load_agent, load_controller
    from vmc.models.controller import Controller

    cfg = evolve.EvolveConfig(vae=str(world / "vae.pt"), mdn=str(world / "mdn.pt"), latents=str(world / "latents.h5"),
                              run=str(tmp_path / "r"), workers=2, popsize=4, rollouts=1, generations=1, max_steps=15,
                              eval_every=1, eval_rollouts=1, dagger_rounds=2, dagger_episodes=2, controller_hidden=5,
                              controller_still=True)
    summary = evolve.evolve(cfg, progress=False)
    assert [e["generation"] for e in summary["evals"]] == [0, 1] and all(e["races"] == 2 for e in summary["evals"])
    ck, models = load_controller(tmp_path / "r" / "controller" / "best.pt")
    assert ck["params"].shape == (Controller.size(8 + 16 + 1, 5),) and models.hidden_of(ck["params"]) == 5
    assert models.still is not None and models.still.threshold > 0
    agent = load_agent(tmp_path / "r" / "controller" / "best.pt")
    assert agent.controller.hidden == 5 and agent.controller.still
    action = agent.act(np.zeros((64, 64, 3), np.uint8))
    assert action.shape == (3,) and -1 <= action[0] <= 1 and 0 <= action[1:].min() <= action[1:].max() <= 1


def test_kill_and_resume_continues_exactly(world: Path, tmp_path: Path):
    straight = subprocess.run(cli(world, tmp_path / "straight", 3), capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-2000:]
    proc = subprocess.Popen(cli(world, tmp_path / "killed", 20), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    state = tmp_path / "killed" / "controller" / "evolve.pt"
    t0 = time.time()
    while time.time() - t0 < 300 and not (state.exists() and load_checkpoint(state, "evolve")["generation"] >= 1):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, mid-generation
    proc.wait()
    done = load_checkpoint(state, "evolve")["generation"]
    assert 1 <= done < 20
    resumed = subprocess.run(cli(world, tmp_path / "killed", max(3, done), "--resume"), capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    a = load_checkpoint(tmp_path / "straight" / "controller" / "evolve.pt", "evolve")["history"]
    b = load_checkpoint(state, "evolve")["history"][:3]
    assert [(h["generation"], h["best"], h["mean"], h["sigma"]) for h in a] == [(h["generation"], h["best"], h["mean"], h["sigma"]) for h in b]
    again = subprocess.run(cli(world, tmp_path / "killed", 3), capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "--resume" in again.stderr


def test_play_renders_a_watchable_lap(world: Path, tmp_path: Path):
    import imageio.v2 as imageio

    from vmc.play import play

    cfg = evolve.EvolveConfig(vae=str(world / "vae.pt"), mdn=str(world / "mdn.pt"), latents=str(world / "latents.h5"),
                              run=str(tmp_path / "r"), workers=1, popsize=4, rollouts=1, generations=1, max_steps=25,
                              eval_every=0, init="fit")
    evolve.evolve(cfg, progress=False)
    summary = play(tmp_path / "r" / "controller" / "best.pt", tmp_path / "lap.mp4")
    frames = imageio.mimread(tmp_path / "lap.mp4")
    assert len(frames) == summary["steps"] + 1 and frames[0].shape == (300, 400, 3)
    assert np.asarray(frames[-1]).std() > 20
    assert summary["replay_drift_m"] < 0.5  # the 400x300 replay drove the same race
    assert json.loads((tmp_path / "lap.json").read_text())["score"] == pytest.approx(summary["score"])


def test_vae_and_mdn_losses_fall_on_real_frames(world: Path):
    import torch

    from vmc.data import RolloutDataset, load_episode
    from vmc.models import MDNRNN, ConvVAE

    torch.manual_seed(0)
    with RolloutDataset(world.parent / "data") as ds:
        frames = next(ds.iter_frames(32, shuffle=True, seed=0))
        episodes = [load_episode(r) for r in ds.episodes[:4]]
    seq = {"observations": np.stack([e.observations[:11] for e in episodes]),
           "actions": np.stack([e.actions[:10] for e in episodes]), "rewards": np.stack([e.rewards[:10] for e in episodes]),
           "dones": np.stack([e.terminations[:10] for e in episodes])}
    x = ConvVAE.to_input(torch.from_numpy(frames))
    vae = ConvVAE(VAEConfig(z_dim=8, channels=(16, 32, 32, 64)))
    opt = torch.optim.Adam(vae.parameters(), lr=1e-3)
    losses = []
    for _ in range(30):
        terms = vae.loss(x, *vae(x))
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        losses.append(terms["loss"].item())
    assert losses[-1] < 0.6 * losses[0]
    with torch.no_grad():  # real latents and actions for the MDN-RNN
        obs = torch.from_numpy(seq["observations"]).reshape(-1, 64, 64, 3)
        z = vae.encode(ConvVAE.to_input(obs))[0].reshape(4, 11, 8)
    mdn = MDNRNN(MDNRNNConfig(z_dim=8, hidden=32, gaussians=2))
    opt = torch.optim.Adam(mdn.parameters(), lr=3e-3)
    a, r, d = (torch.from_numpy(seq[k]).float() for k in ("actions", "rewards", "dones"))
    nll = []
    for _ in range(60):
        heads, _ = mdn(z[:, :-1], a)
        terms = mdn.loss(heads, z[:, 1:], r, d)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        nll.append(terms["loss"].item())
    assert nll[-1] < nll[0] - 0.5


def test_iterative_procedure_runs_two_rounds_and_leaves_the_base_data_alone(world: Path, tmp_path: Path):
    from vmc.data import RolloutDataset
    from vmc.iterate import IterateConfig, iterate

    before = sorted(p.name for p in (world.parent / "data").glob("shard-*.h5"))
    run = tmp_path / "run"  # the world's models, in a run folder of this test's own
    shutil.copytree(world, run, ignore=shutil.ignore_patterns("controller"))
    cfg = IterateConfig(rounds=3, data=str(world.parent / "data"), run=str(run), workers=2, episodes=2,
                        mdn_epochs=1, mdn_steps=3, mdn_seq_len=8, popsize=4, rollouts=2, generations=1,
                        dream_steps=10, eval_seeds=1, max_steps=15, dream_eval_rollouts=5)
    rows = iterate(cfg)
    # Round 3 grows the same collection with round 2's controller (each episode names its controller).
    assert [r["round"] for r in rows] == [1, 2, 3] and rows[1]["episodes"] == 4 + 2 and rows[2]["episodes"] == 4 + 4
    for r in rows:  # a dream score and a real score side by side
        assert np.isfinite(r["dream"]) and np.isfinite(r["real"])
    # The pick is made on 5 dream races per candidate; the real evaluation stays at 1 noisy seed + 1 noise-free.
    out = run / "iterate" / "round-3" / "controller"
    evals = load_checkpoint(out / "evolve.pt", "evolve")["evals"]
    assert evals[-1]["dream_races"] == 5 and evals[-1]["races"] == 2
    # Every evaluated candidate keeps its parameters: best.pt is one of them.
    from vmc.checkpoints import load_controller

    best = np.asarray(load_controller(out / "best.pt")[0]["params"])
    kept = [np.asarray(c["params"]) for e in evals for c in e["candidates"].values()]
    assert any(np.array_equal(k, best) for k in kept) and all(k.shape == best.shape for k in kept)
    it = run / "iterate"
    with RolloutDataset(it / "data", "all") as ds:
        assert sorted(e.policy for e in ds.episodes).count("controller") == 4
        # episode_steps 0: the collected races run to the races' step limit, as the scored ones do
        assert max(e.length for e in ds.episodes if e.policy == "controller") == cfg.max_steps
    assert sorted(p.name for p in (world.parent / "data").glob("shard-*.h5")) == before
    assert (it / "round-2" / "mdn.pt").is_file() and (it / "rounds.csv").is_file()
    again = iterate(cfg)  # everything on disk: nothing is redone, the same rows come back
    assert [r["real"] for r in again] == [r["real"] for r in rows]
