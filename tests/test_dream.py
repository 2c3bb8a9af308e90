"""The dream on tiny models (no game): batched rollouts equal single ones, the done head, the stuck rule and a
lap end rollouts, the done loss's weight, start states match the recorded prefix, and ``evolve --dream``
resumes exactly."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_collection

from vmc import evolve
from vmc.checkpoints import WorldModels, fingerprint, load_checkpoint, load_controller, save_checkpoint, save_controller
from vmc.dream import DreamEnv, DreamStarts, batched_actions
from vmc.errors import CheckpointError, VmcError
from vmc.latents import FORMAT, latents_info, read_latents, write_latents
from vmc.models import MDNRNN, MDNRNNConfig, VAEConfig
from vmc.models.controller import Controller
from vmc.models.vae import ConvVAE
from vmc.train_mdn import dream_video

Z, H = 4, 8


def tiny_mdn(seed: int = 0) -> MDNRNN:
    torch.manual_seed(seed)
    return MDNRNN(MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3)).eval()


def tiny_vae(seed: int = 0) -> ConvVAE:
    torch.manual_seed(seed)
    return ConvVAE(VAEConfig(z_dim=Z, channels=(8, 8, 8, 8))).eval()


def tiny_latents(path: Path, episodes: int = 4, steps: int = 25, vae: ConvVAE | None = None) -> Path:
    """A latent file written by ``vmc.latents`` from a synthetic collection; its split puts episodes 0, 1 and 3
    in training and episode 2 in validation."""
    vae = vae or tiny_vae()
    data = tiny_collection(path.with_name(path.stem + "-data"), episodes, steps)
    write_latents(vae, fingerprint(vae.state_dict()), data, path)
    info = latents_info(path)
    assert info["vmc_format"] == FORMAT and info["z_dim"] == Z and info["episodes"] == episodes
    return path


def test_two_collections_linked_into_one_folder_encode_every_episode(tmp_path: Path):
    """Episode names repeat across collections (each numbers its own from 0): a folder holding shards of two
    gets every episode, those with a shared name told apart by their shard."""
    import os

    a, b = tiny_collection(tmp_path / "a", 2, 10), tiny_collection(tmp_path / "b", 3, 10)
    both = tmp_path / "both"
    both.mkdir()
    for src, tag in ((a, "a"), (b, "b")):
        for shard in src.glob("shard-*.h5"):
            os.link(shard, both / f"{shard.stem}-{tag}.h5")
    vae = tiny_vae()
    path = write_latents(vae, fingerprint(vae.state_dict()), both, tmp_path / "lat.h5")
    names = sorted(e["name"] for e in read_latents(path))
    assert len(names) == 5 and len(set(names)) == 5
    assert "ep_0000002" in names and "ep_0000000@shard-0-a" in names and "ep_0000000@shard-0-b" in names
    mdn_cfg = MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3)  # the dream video finds the real frames by these names
    save_checkpoint(tmp_path / "vae.pt", "vae", {"model": vae.state_dict()}, {"model": vae.config})
    save_checkpoint(tmp_path / "mdn.pt", "mdn", {"model": MDNRNN(mdn_cfg).state_dict()}, {"model": mdn_cfg})
    assert dream_video(tmp_path / "vae.pt", tmp_path / "mdn.pt", path, tmp_path / "dream.mp4", steps=5).is_file()


def test_batched_controller_equals_linear_controller():
    rng = np.random.default_rng(0)
    params = rng.normal(size=(3, (Z + H) * 3 + 3))
    z, h = torch.randn(3, 5, Z), torch.randn(3, 5, H)
    got = batched_actions(torch.as_tensor(params, dtype=torch.float32), z, h)
    for p in range(3):
        ctrl = Controller(Z, H)
        ctrl.set_flat(params[p])
        torch.testing.assert_close(got[p], ctrl(z[p], h[p]).detach())


def test_starts_hold_the_lstm_state_of_the_recorded_prefix(tmp_path: Path):
    mdn = tiny_mdn()
    lat = tiny_latents(tmp_path / "lat.h5")
    starts = DreamStarts.from_latents(lat, mdn, every=10)
    train = read_latents(lat, "train")
    assert [e["name"] for e in train] == ["ep_0000000", "ep_0000001", "ep_0000003"]
    assert len(starts) == 3 * 3 and int(starts.at_start.sum()) == 3  # steps 0, 10, 20 of 3 training episodes
    mu, actions = torch.from_numpy(train[0]["mu"]), torch.from_numpy(train[0]["actions"])
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
        ctrl = Controller(Z, H)
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
    mdn = constant_heads(tiny_mdn(), 1.0, bias)
    env = DreamEnv(mdn, DreamStarts.from_latents(tiny_latents(tmp_path / "lat.h5"), mdn), max_steps=12)
    res = env.run(np.zeros((2, (Z + H) * 3 + 3)), env.noise(0, 3))
    assert (res.steps == steps).all() and bool(res.done.all()) == (bias > 0)
    torch.testing.assert_close(res.scores, torch.full((2, 3), float(steps)))  # reward 1 per step lived


def constant_heads(mdn: MDNRNN, reward: float, done_bias: float = -10.0) -> MDNRNN:
    """``mdn`` with the reward head fixed at ``reward`` and the done head off."""
    with torch.no_grad():
        mdn.done.weight.zero_()
        mdn.done.bias.fill_(done_bias)
        mdn.reward.weight.zero_()
        mdn.reward.bias.fill_(reward)
    return mdn


@pytest.mark.parametrize("reward, steps, stuck", [(-0.1, 5, True), (0.0, 5, True), (0.5, 40, False)])
def test_stuck_rule_ends_rollouts_that_make_no_progress(tmp_path: Path, reward: float, steps: int, stuck: bool):
    # min_progress 2 per 5 steps: reward 0 is 0.1 of progress a step (0.5 in 5: stuck), 0.5 is 0.6 a step.
    mdn = constant_heads(tiny_mdn(), reward)
    env = DreamEnv(mdn, DreamStarts.from_latents(tiny_latents(tmp_path / "lat.h5"), mdn), max_steps=40,
                   stuck_steps=5, min_progress=2.0)
    res = env.run(np.zeros((2, (Z + H) * 3 + 3)), env.noise(0, 3))
    assert (res.steps == steps).all() and bool(res.stuck.all()) == stuck and bool(res.done.all()) == stuck
    assert not res.lap.any()
    off = DreamEnv(mdn, env.starts, max_steps=40, stuck_steps=0).run(np.zeros((1, (Z + H) * 3 + 3)), env.noise(0, 3))
    assert (off.steps == 40).all() and not off.stuck.any()  # the rule is off with stuck_steps 0


def test_dream_rollout_ends_at_a_lap_and_evaluations_dream_whole_races(tmp_path: Path):
    mdn = constant_heads(tiny_mdn(), 300.0 - 0.1)  # 300 of progress a step: a lap (1000) within the 4th step
    env = DreamEnv(mdn, DreamStarts.from_latents(tiny_latents(tmp_path / "lat.h5"), mdn), max_steps=12)
    res = env.run(np.zeros((1, (Z + H) * 3 + 3)), env.noise(0, 2))
    assert (res.steps == 4).all() and res.done.all() and res.lap.all() and not res.stuck.any()
    whole = env.noise(0, 5, steps=30, race_start=1.0)
    assert whole["u"].shape[0] == 30 and bool(env.starts.at_start[whole["start"]].all())
    # A start in the middle of a race counts the progress recorded before it: 700 there, 300 a step, a lap in one.
    mid = int(torch.nonzero(~env.starts.at_start)[0])
    env.starts.reward[mid] = 700.0 - 0.1 * float(env.starts.steps[mid])
    noise = {**env.noise(0, 2), "start": torch.tensor([0, mid])}
    assert env.run(np.zeros((1, (Z + H) * 3 + 3)), noise).steps.tolist() == [[4, 1]]


def test_done_weight_scales_the_loss_of_ending_steps():
    mdn = tiny_mdn()
    z, a = torch.randn(2, 6, Z), torch.rand(2, 5, 3)
    heads, _ = mdn(z[:, :-1], a)
    reward = torch.zeros(2, 5)
    ends, running = torch.ones(2, 5), torch.zeros(2, 5)
    for done, factor in ((ends, 10.0), (running, 1.0)):  # the weight applies to done steps only
        plain = mdn.loss(heads, z[:, 1:], reward, done)["done"]
        torch.testing.assert_close(mdn.loss(heads, z[:, 1:], reward, done, done_weight=10.0)["done"], factor * plain)


def test_windows_reach_episode_ends_as_often_as_any_step(tmp_path: Path):
    """Every step but an episode's first L-1 ends L windows' worth of samples, so its last (done) step is trained on
    as often as a step in its middle; an episode shorter than a window is sampled too, padded, and the padding is
    masked out of the loss."""
    from vmc.train_mdn import LatentSequences, batch_loss

    lat = tiny_latents(tmp_path / "lat.h5", episodes=4, steps=25)
    seqs = LatentSequences(lat, "train", 8)
    b = seqs.sample(4000, np.random.default_rng(0))
    assert b["z"].shape == (4000, 9, Z) and b["mask"].shape == (4000, 8)
    # Each training episode is 25 steps: step 24 ends it; step 12 is in its middle. Both lie in windows started at
    # 8 of the 25 steps of the episode.
    dones = b["dones"][b["mask"]].sum().item()
    assert 0.8 * 4000 * 8 / 25 < dones < 1.2 * 4000 * 8 / 25
    assert not b["dones"][~b["mask"]].any() and (b["mask"].sum(1) < 8).any()  # windows cut by an episode's end
    short = LatentSequences(tiny_latents(tmp_path / "short.h5", episodes=4, steps=3), "train", 8)  # shorter than L
    bs = short.sample(16, np.random.default_rng(0))
    assert bs["mask"].sum(1).max() == 3 and (bs["dones"].sum(1) == 1).all()  # every window ends its episode

    torch.manual_seed(0)
    mdn = MDNRNN(MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3))
    full = batch_loss(mdn, bs, torch.device("cpu"), done_weight=5.0)
    junk = {**bs, "z": bs["z"].clone(), "rewards": bs["rewards"].clone()}
    junk["z"][:, 4:] += 100.0  # what lies beyond a window's end changes nothing (the LSTM only looks back)
    junk["rewards"][~bs["mask"]] = 7.0
    for k, v in batch_loss(mdn, junk, torch.device("cpu"), done_weight=5.0).items():
        torch.testing.assert_close(v, full[k])


def tiny_checkpoints(tmp_path: Path) -> evolve.EvolveConfig:
    vae = tiny_vae()
    save_checkpoint(tmp_path / "vae.pt", "vae", {"model": vae.state_dict()}, {"model": vae.config})
    mdn_cfg = MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3)
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "mdn.pt", "mdn", {"model": MDNRNN(mdn_cfg).state_dict()}, {"model": mdn_cfg})
    return evolve.EvolveConfig(run=str(tmp_path / "run"), vae=str(tmp_path / "vae.pt"), mdn=str(tmp_path / "mdn.pt"),
                               latents=str(tiny_latents(tmp_path / "lat.h5", vae=vae)), dream=True,
                               init="zeros", popsize=6, rollouts=3, dream_steps=15, eval_every=0, workers=1)


def test_dream_evolve_resumes_exactly(tmp_path: Path):
    cfg = tiny_checkpoints(tmp_path)
    cfg.generations = 4
    straight = evolve.evolve(cfg, progress=False)
    rows = load_checkpoint(tmp_path / "run" / "controller" / "evolve.pt", "evolve")["history"]

    cfg.run = str(tmp_path / "run2")
    cfg.generations = 2
    evolve.evolve(cfg, progress=False)
    cfg.generations = 4
    with pytest.raises(VmcError, match="--resume"):
        evolve.evolve(cfg, progress=False)
    cfg.resume = True
    resumed = evolve.evolve(cfg, progress=False)
    out2 = tmp_path / "run2" / "controller"
    rows2 = load_checkpoint(out2 / "evolve.pt", "evolve")["history"]
    assert [r["generation"] for r in rows2] == [1, 2, 3, 4]
    assert [r["best"] for r in rows2] == [r["best"] for r in rows]
    assert resumed["best_fitness"] == straight["best_fitness"]
    assert (out2 / "best.pt").is_file() and (out2 / "log.csv").is_file()


def test_dream_noise_sets_only_the_fitness_noise(tmp_path: Path):
    """``DreamEnv.run(action_noise=)`` overrides the env's noise for one call; ``vmc.evolve --dream-noise`` makes
    CMA-ES's dream rollouts noisier (other fitness) while its default is ``--action-noise``, and needs ``--dream``."""
    mdn = tiny_mdn()
    env = DreamEnv(mdn, DreamStarts.from_latents(tiny_latents(tmp_path / "lat.h5"), mdn), max_steps=12, action_noise=0.1)
    params = np.random.default_rng(2).normal(0, 0.3, (2, (Z + H) * 3 + 3))
    noise = env.noise(seed=3, rollouts=4)
    quiet = DreamEnv(mdn, env.starts, max_steps=12, action_noise=0.0).run(params, noise)
    torch.testing.assert_close(env.run(params, noise, action_noise=0.0).scores, quiet.scores)
    torch.testing.assert_close(env.run(params, noise, action_noise=0.1).scores, env.run(params, noise).scores)
    assert not torch.equal(env.run(params, noise, action_noise=0.5).scores, env.run(params, noise).scores)

    cfg = replace(tiny_checkpoints(tmp_path / "m"), generations=2)
    runs = {name: evolve.evolve(replace(cfg, run=str(tmp_path / name), dream_noise=sd), progress=False)["best_fitness"]
            for name, sd in (("default", None), ("same", cfg.action_noise), ("noisier", 0.5))}
    assert runs["default"] == runs["same"] != runs["noisier"]
    with pytest.raises(ValueError, match="--dream-noise .* needs --dream"):
        replace(cfg, dream=False, dream_noise=0.2).validate()


def test_dream_done_stuck_leaves_the_done_head_out(tmp_path: Path):
    """``load_dream(done_head=False)`` (``vmc.evolve --dream-done stuck``): a done head that fires at every step
    ends every rollout after one step with it, none without it (the stuck rule and the lap still can); and
    CMA-ES's fitness changes with it."""
    from vmc.dream import load_dream

    mdn = tiny_mdn()
    with torch.no_grad():
        mdn.done.bias.fill_(20.0)  # the head's probability about 1 everywhere
    lat = tiny_latents(tmp_path / "lat.h5")
    params = np.random.default_rng(2).normal(0, 0.3, (2, (Z + H) * 3 + 3))
    with_head, without = (load_dream(mdn, lat, 1.15, 12, 0.1, done_head=h) for h in (True, False))
    noise = with_head.noise(seed=3, rollouts=4)
    ended = with_head.run(params, noise)
    assert ended.done.all() and (ended.steps == 1).all()
    free = without.run(params, noise)
    assert (free.steps > 1).all() and not (free.done & ~free.stuck & ~free.lap).any()

    cfg = replace(tiny_checkpoints(tmp_path / "m"), generations=2)
    firing = MDNRNN(MDNRNNConfig(z_dim=Z, hidden=H, gaussians=3))
    with torch.no_grad():
        firing.done.bias.fill_(20.0)
    save_checkpoint(Path(cfg.mdn), "mdn", {"model": firing.state_dict()}, {"model": firing.config})
    fit = {d: evolve.evolve(replace(cfg, run=str(tmp_path / d), dream_done=d), progress=False)["best_fitness"]
           for d in ("head", "stuck")}
    assert fit["head"] != fit["stuck"]
    with pytest.raises(ValueError, match="--dream-done stuck .* needs --dream and --dream-stuck-steps"):
        replace(cfg, dream_done="stuck", dream_stuck_steps=0).validate()


def test_keep_and_dream_pick_steps_need_evaluations(tmp_path: Path):
    cfg = tiny_checkpoints(tmp_path)  # eval_every 0: no evaluation whose mean --keep mean could keep
    with pytest.raises(ValueError, match="--keep mean .* needs --eval-every"):
        replace(cfg, keep="mean").validate()
    with pytest.raises(ValueError, match="best or mean, got 'Mean'"):
        replace(cfg, keep="Mean").validate()
    replace(cfg, keep="mean", eval_every=2).validate()
    with pytest.raises(ValueError, match="--dream-pick-steps .* needs --dream and --eval-every"):
        replace(cfg, dream_pick_steps=20).validate()  # no evaluation to pick among
    replace(cfg, dream_pick_steps=20, eval_every=2).validate()


def test_evolve_starts_from_a_controller_checkpoint(tmp_path: Path):
    cfg = tiny_checkpoints(tmp_path)
    cfg.generations = 1
    evolve.evolve(cfg, progress=False)
    best = tmp_path / "run" / "controller" / "best.pt"
    params = load_controller(best)[0]["params"]
    np.testing.assert_array_equal(evolve.initial_mean(replace(cfg, init=str(best)), WorldModels.load(cfg.vae, cfg.mdn),
                                                      None), params)
    out = evolve.evolve(replace(cfg, run=str(tmp_path / "run2"), init=str(best)), progress=False)
    assert out["generation"] == 1 and np.isfinite(out["best_fitness"])
    with pytest.raises(CheckpointError, match="--controller-hidden 4 need"):
        evolve.evolve(replace(cfg, run=str(tmp_path / "run3"), init=str(best), controller_hidden=4), progress=False)


def test_controller_policy_explores_around_the_controller(tmp_path: Path):
    from vmc.policies import make_policy

    cfg = tiny_checkpoints(tmp_path)
    params = np.random.default_rng(0).normal(0, 0.1, (Z + H) * 3 + 3)
    save_controller(tmp_path / "best.pt", WorldModels.load(cfg.vae, cfg.mdn), params,
                    {"fitness": 0.0, "generation": 0, "tracks": list(cfg.tracks), "track": cfg.tracks[0],
                     "max_steps": cfg.max_steps}, cfg)
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


@pytest.mark.parametrize("hidden", [0, 6])
def test_carry_over_keeps_the_controllers_actions_on_a_retrained_mdn(tmp_path: Path, hidden: int):
    from vmc.dagger import carry_over, controller_inputs

    latents = tiny_latents(tmp_path / "lat.h5")
    old, new = tiny_mdn(0), tiny_mdn(1)  # two MDN-RNNs: "before" and "after" retraining
    params = np.random.default_rng(3).normal(0, 0.5, Controller.size(Z + H, hidden))

    def outputs(p: np.ndarray, mdn: MDNRNN) -> np.ndarray:
        x, _ = controller_inputs(latents, mdn)
        return Controller.batched_raw(torch.as_tensor(p)[None], torch.as_tensor(x, dtype=torch.float64)[None])[0].numpy()

    target = outputs(params, old)
    carried = carry_over(params, old, new, latents, ridge=1e-6)
    assert carried.shape == params.shape
    kept_error = np.abs(outputs(params, new) - target).mean()
    carried_error = np.abs(outputs(carried, new) - target).mean()
    assert carried_error < 0.5 * kept_error
    same = carry_over(params, old, old, latents, ridge=1e-6)  # nothing to move: the same outputs
    np.testing.assert_allclose(outputs(same, old), target, atol=1e-3 if not hidden else 0.1)


def test_carry_over_onto_a_retrained_vae_matches_episodes_by_name(tmp_path: Path):
    from vmc.dagger import carry_over, controller_inputs

    latents = tiny_latents(tmp_path / "lat.h5", episodes=3)
    grown = tiny_collection(tmp_path / "grown", 4, 25)  # the same three episodes and one more
    new_vae = tiny_vae(1)
    new_latents = write_latents(new_vae, fingerprint(new_vae.state_dict()), grown, tmp_path / "new.h5")
    old, new = tiny_mdn(0), tiny_mdn(1)
    params = np.random.default_rng(3).normal(0, 0.5, (Z + H) * 3 + 3)
    names = {e["name"] for e in read_latents(latents, fields=())}
    assert len(names) == 3 and len(read_latents(new_latents, fields=())) == 4

    def outputs(p: np.ndarray, path: Path, mdn: MDNRNN) -> np.ndarray:
        x, _ = controller_inputs(path, mdn, names)
        return x @ p[:-3].reshape(3, Z + H).T + p[-3:]

    target = outputs(params, latents, old)
    carried = carry_over(params, old, new, latents, new_latents, ridge=1e-6)
    assert np.abs(outputs(carried, new_latents, new) - target).mean() < 0.5 * np.abs(outputs(params, new_latents, new) - target).mean()
