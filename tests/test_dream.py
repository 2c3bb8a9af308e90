"""The dream on tiny models (no game): batched rollouts equal single ones, the done head ends rollouts,
start states match the recorded prefix, and ``evolve --dream`` resumes exactly."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from vmc import evolve
from vmc.dream import DreamEnv, DreamStarts, batched_actions
from vmc.models import MDNRNN, MDNRNNConfig, VAEConfig
from vmc.models.controller import LinearController
from vmc.models.vae import ConvVAE
from vmc.training import save_checkpoint
from vmc.train_vae import LATENTS_FORMAT

Z, H = 4, 8


def tiny_mdn(seed: int = 0) -> MDNRNN:
    torch.manual_seed(seed)
    return MDNRNN(MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3)).eval()


def tiny_latents(path: Path, episodes: int = 4, steps: int = 25) -> Path:
    with h5py.File(path, "w") as f:
        f.attrs["vmc_format"] = LATENTS_FORMAT
        for i in range(episodes):
            rng = np.random.default_rng(i)
            g = f.create_group(f"ep_{i:07d}")
            g["mu"] = rng.normal(size=(steps + 1, Z)).astype(np.float32)
            g["logvar"] = np.full((steps + 1, Z), -2.0, np.float32)
            g["actions"] = rng.uniform(0, 1, (steps, 3)).astype(np.float32)
            g["rewards"] = np.full(steps, 2.0, np.float32)
            g["terminations"] = np.zeros(steps, bool)
            g.attrs.update({"split": "train" if i < episodes - 1 else "val", "length": steps})
    return path


def test_batched_controller_equals_linear_controller():
    rng = np.random.default_rng(0)
    params = rng.normal(size=(3, (Z + H) * 3 + 3))
    z, h = torch.randn(3, 5, Z), torch.randn(3, 5, H)
    got = batched_actions(torch.as_tensor(params, dtype=torch.float32), z, h)
    for p in range(3):
        ctrl = LinearController(Z, H)
        ctrl.set_flat(params[p])
        torch.testing.assert_close(got[p], ctrl(z[p], h[p]).detach())


def test_starts_hold_the_lstm_state_of_the_recorded_prefix(tmp_path: Path):
    mdn = tiny_mdn()
    lat = tiny_latents(tmp_path / "lat.h5")
    starts = DreamStarts.from_latents(lat, mdn, every=10)
    assert len(starts) == 3 * 3 and int(starts.at_start.sum()) == 3  # steps 0, 10, 20 of 3 training episodes
    with h5py.File(lat) as f:
        mu, actions = torch.from_numpy(f["ep_0000000"]["mu"][()]), torch.from_numpy(f["ep_0000000"]["actions"][()])
    with torch.no_grad():
        heads, _ = mdn(mu[None, :10], actions[None, :10])
    torch.testing.assert_close(starts.h[1], heads["h"][0, 9])  # state before step 10 = output after step 9
    torch.testing.assert_close(starts.z[1], mu[10])
    assert torch.equal(starts.h[0], torch.zeros(H))


def test_batched_dream_equals_rollouts_one_by_one(tmp_path: Path):
    mdn = tiny_mdn()
    starts = DreamStarts.from_latents(tiny_latents(tmp_path / "lat.h5"), mdn, every=5)
    env = DreamEnv(mdn, starts, temperature=1.2, max_steps=12, action_noise=0.1)
    params = np.random.default_rng(1).normal(0, 0.3, (3, (Z + H) * 3 + 3))
    noise = env.noise(seed=7, rollouts=4)
    batch = env.run(params, noise)
    assert batch.scores.shape == (3, 4)
    for p in range(3):
        ctrl = LinearController(Z, H)
        ctrl.set_flat(params[p])
        for r in range(4):
            i = noise["start"][r]
            z, state = starts.z[i][None], (starts.h[i].view(1, 1, H), starts.c[i].view(1, 1, H))
            total = 0.0
            with torch.no_grad():
                for t in range(env.max_steps):
                    a = ctrl(z, state[0][0])
                    a[:, :2] += 0.1 * noise["action"][t, r]
                    a = a.clamp(torch.tensor([-1.0, 0.0, 0.0]), torch.tensor(1.0))
                    heads, state = mdn.step(z, a, state)
                    total += float(heads["reward"][0])
                    if torch.sigmoid(heads["done_logit"][0]) > 0.5:
                        break
                    z = MDNRNN.sample_with(heads, 1.2, noise["u"][t, r][None], noise["eps"][t, r][None])
            assert batch.scores[p, r].item() == pytest.approx(total, rel=1e-4, abs=1e-4)
    # Common random numbers: the same candidate twice in one batch gets the same scores.
    twice = env.run(np.stack([params[0], params[0]]), noise)
    torch.testing.assert_close(twice.scores[0], twice.scores[1])


@pytest.mark.parametrize("bias, steps", [(10.0, 1), (-10.0, 12)])
def test_done_head_ends_rollouts(tmp_path: Path, bias: float, steps: int):
    mdn = tiny_mdn()
    with torch.no_grad():
        mdn.done.weight.zero_()
        mdn.done.bias.fill_(bias)
        mdn.reward.weight.zero_()
        mdn.reward.bias.fill_(1.0)
    env = DreamEnv(mdn, DreamStarts.from_latents(tiny_latents(tmp_path / "lat.h5"), mdn), max_steps=12)
    res = env.run(np.zeros((2, (Z + H) * 3 + 3)), env.noise(0, 3))
    assert (res.steps == steps).all() and bool(res.done.all()) == (bias > 0)
    torch.testing.assert_close(res.scores, torch.full((2, 3), float(steps)))  # reward 1 per step lived


def tiny_checkpoints(tmp_path: Path) -> evolve.EvolveConfig:
    torch.manual_seed(0)
    vae_cfg = VAEConfig(z_dim=Z, channels=(8, 8, 8, 8))
    save_checkpoint(tmp_path / "vae.pt", "vae", {"model": ConvVAE(vae_cfg).state_dict()}, {"model": vae_cfg})
    mdn_cfg = MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3)
    save_checkpoint(tmp_path / "mdn.pt", "mdn", {"model": MDNRNN(mdn_cfg).state_dict()}, {"model": mdn_cfg})
    return evolve.EvolveConfig(vae=str(tmp_path / "vae.pt"), mdn=str(tmp_path / "mdn.pt"),
                               latents=str(tiny_latents(tmp_path / "lat.h5")), out=str(tmp_path / "ctrl"), dream=True,
                               init="zeros", popsize=6, rollouts=3, dream_steps=15, eval_every=0, workers=1)


def test_dream_evolve_resumes_exactly(tmp_path: Path):
    cfg = tiny_checkpoints(tmp_path)
    cfg.generations = 4
    straight = evolve.evolve(cfg, progress=False)
    rows = evolve.load_checkpoint(tmp_path / "ctrl" / "evolve.pt", "evolve")["history"]

    cfg.out = str(tmp_path / "ctrl2")
    cfg.generations = 2
    evolve.evolve(cfg, progress=False)
    cfg.generations = 4
    with pytest.raises(SystemExit, match="--resume"):
        evolve.evolve(cfg, progress=False)
    resumed = evolve.evolve(cfg, resume=True, progress=False)
    rows2 = evolve.load_checkpoint(tmp_path / "ctrl2" / "evolve.pt", "evolve")["history"]
    assert [r["generation"] for r in rows2] == [1, 2, 3, 4]
    assert [r["best"] for r in rows2] == [r["best"] for r in rows]
    assert resumed["best_fitness"] == straight["best_fitness"]
    assert (tmp_path / "ctrl2" / "best.pt").is_file() and (tmp_path / "ctrl2" / "log.csv").is_file()


def test_controller_policy_explores_around_the_controller(tmp_path: Path):
    from vmc.policies import make_policy

    cfg = tiny_checkpoints(tmp_path)
    params = np.random.default_rng(0).normal(0, 0.1, (Z + H) * 3 + 3)
    evolve.save_best(tmp_path, cfg, params, 0.0, 0, Z, H)
    frames = np.random.default_rng(1).integers(0, 255, (30, 64, 64, 3), dtype=np.uint8)

    def drive(seed: int, noise: float) -> np.ndarray:
        pol = make_policy("controller", str(tmp_path / "best.pt"), noise)
        pol.reset(None, seed)
        return np.stack([pol.act(f, {}) for f in frames])

    a = drive(3, 0.1)
    assert a.shape == (30, 3) and a[:, 0].min() >= -1 and a[:, 1:].min() >= 0 and a[:, 1:].max() <= 1
    np.testing.assert_array_equal(a, drive(3, 0.1))
    assert not np.array_equal(a, drive(4, 0.1))
    clean = drive(3, 0.0)
    assert 0 < np.abs(a[:, :2] - clean[:, :2]).mean() < 0.2  # noise around the controller's own actions
    assert a[0, 2] == clean[0, 2]  # brake is not noised (later it differs: h follows the noisy actions taken)
