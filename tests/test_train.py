"""train_vae and train_mdn end to end on tiny synthetic collections: files, resume, errors (no game)."""

from dataclasses import replace
from pathlib import Path

import h5py
import pytest
from conftest import tiny_collection

from vmc import train_mdn, train_vae
from vmc.checkpoints import load_checkpoint
from vmc.errors import CheckpointError, VmcError
from vmc.models import MDNRNNConfig, VAEConfig

SMALL_VAE = VAEConfig(z_dim=8, channels=(8, 16, 16, 32))


def vae_cfg(tmp_path: Path, epochs: int, **kw) -> train_vae.TrainVAEConfig:
    return train_vae.TrainVAEConfig(data=str(tmp_path / "data"), run=str(tmp_path / "ck"), epochs=epochs, batch_size=32,
                                    val_fraction=0.25, **{"model": SMALL_VAE, **kw})


def test_train_vae_writes_checkpoints_pictures_and_latents(tmp_path: Path):
    tiny_collection(tmp_path / "data")
    cfg = vae_cfg(tmp_path, 2)
    last = train_vae.train(cfg, progress=False)
    ck = tmp_path / "ck"
    assert last["epoch"] == 2 and last["val_loss"] > 0
    for name in ("vae.pt", "vae.last.pt", "vae.json", "vae_loss.png", "vae_recon_epoch001.png", "vae_recon_epoch002.png"):
        assert (ck / name).is_file(), name
    last_ckpt = load_checkpoint(ck / "vae.last.pt", "vae")
    hist = last_ckpt["history"]
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    # trained with contiguous weights: a channels-last one is copied by the fused Adam at every step
    assert all(w.is_contiguous() for w in last_ckpt["model"].values())
    latents = train_vae.encode(cfg)
    assert latents == ck / "latents.h5"
    with h5py.File(latents) as f:
        g = f["ep_0000000"]
        assert g["mu"].shape == (21, 8) and g["logvar"].shape == (21, 8) and g["actions"].shape == (20, 3)
        assert {f[k].attrs["split"] for k in f} == {"train", "val"}


def test_teacher_readout_puts_the_teachers_steering_into_z(tmp_path: Path):
    import numpy as np
    import torch

    from vmc.checkpoints import load_vae
    from vmc.data import RolloutDataset

    tiny_collection(tmp_path / "data", expert=True)
    with RolloutDataset(tmp_path / "data", "all") as ds:
        labels = ds.load_expert_actions()
        assert labels.shape == (ds.num_frames, 3) and int(np.isnan(labels[:, 0]).sum()) == len(ds.episodes)
        with_road = ds.load_expert_actions(road=True)
        assert with_road.shape == (ds.num_frames, 7)
        np.testing.assert_array_equal(with_road[:, :3], labels)
    with pytest.raises(ValueError, match="teacher-outputs 3"):
        vae_cfg(tmp_path, 1, teacher_weight=10.0)
    model = VAEConfig(z_dim=8, channels=(8, 16, 16, 32), teacher_outputs=3)
    cfg = vae_cfg(tmp_path, 6, teacher_weight=100.0, model=model)
    train_vae.train(cfg, progress=False)
    hist = load_checkpoint(tmp_path / "ck" / "vae.last.pt", "vae")["history"]
    assert hist[-1]["train_teacher"] < 0.5 * hist[0]["train_teacher"]
    vae = load_vae(cfg.out)  # the read-out travels with the checkpoint; World Models' VAE has none
    assert vae.teacher is not None and train_vae.ConvVAE(SMALL_VAE).teacher is None
    with torch.no_grad():  # rows without a teacher's action do not count
        mu = torch.randn(4, 8)
        target = torch.tensor([[0.5, 1.0, 0.0], [float("nan")] * 3, [-0.5, 1.0, 0.0], [float("nan")] * 3])
        want = (vae.teacher(mu[[0, 2]]) - target[[0, 2]]).pow(2).sum(1).mean()
        torch.testing.assert_close(vae.teacher_loss(mu, target), want)
    # the read-out of the actions and the road's angles ahead
    road_cfg = replace(cfg, run=str(tmp_path / "road"), epochs=2, model=replace(model, teacher_outputs=7))
    train_vae.train(road_cfg, progress=False)
    assert load_vae(road_cfg.out).teacher.out_features == 7


def test_augmentation_mirrors_frames_with_their_steering_jitters_colours_and_shifts_per_frame(tmp_path: Path):
    import torch

    torch.manual_seed(0)
    x = torch.rand(64, 3, 64, 64)
    teacher = torch.tensor([[0.5, 1.0, 0.0]] * 63 + [[float("nan")] * 3])
    y, t = train_vae.Augment(flip=0.5, colour_jitter=0.0)(x, teacher)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    assert 10 < int(mirrored.sum()) < 54 and ((y == x).flatten(1).all(1) | mirrored).all()
    assert (t[:63, 0] == torch.where(mirrored[:63], -0.5, 0.5)).all() and (t[:63, 1:] == teacher[:63, 1:]).all()
    assert torch.isnan(t[63]).all() and teacher[0, 0] == 0.5  # the caller's labels are not changed
    torch.manual_seed(0)
    road = torch.tensor([[0.5, 1.0, 0.0, 0.1, 0.2, 0.3, 0.4]] * 64)  # the road's angles ahead turn over too
    y, t = train_vae.Augment(flip=0.5, colour_jitter=0.0)(x, road)
    mirrored = (y == x.flip(-1)).flatten(1).all(1)
    sign = torch.where(mirrored, -1.0, 1.0)[:, None]
    torch.testing.assert_close(t, torch.cat([sign * road[:, :1], road[:, 1:3], sign * road[:, 3:]], dim=1))
    y, t = train_vae.Augment(flip=0.0, colour_jitter=0.3)(x, None)
    assert t is None and y.shape == x.shape and 0 <= y.min() and y.max() <= 1
    change = (y - x).abs().flatten(1).mean(1)
    assert change.min() > 0 and change.std() > 0.1 * change.mean()  # every frame altered, and differently
    y, t = train_vae.Augment(flip=0.0, colour_jitter=0.0, shift=4)(x, teacher)
    assert t is teacher and y.shape == x.shape
    # Each frame is the original moved by (dy, dx) in [-4, 4]: find its shift from its middle, then check it all.
    moves = []
    for a, b in zip(x, y):
        found = [(dy, dx) for dy in range(-4, 5) for dx in range(-4, 5)
                 if torch.equal(b[:, 8:56, 8:56], a[:, 8 - dy:56 - dy, 8 - dx:56 - dx])]
        assert len(found) == 1
        moves.append(found[0])
    assert len(set(moves)) > 10  # drawn per frame
    assert not train_vae.Augment(0.0, 0.0)
    with pytest.raises(ValueError, match="--flip"):
        vae_cfg(tmp_path, 1, flip=1.5)
    with pytest.raises(ValueError, match="--shift"):
        vae_cfg(tmp_path, 1, shift=-1)
    tiny_collection(tmp_path / "data", expert=True)  # trains with both, the read-out included
    model = VAEConfig(z_dim=8, channels=(8, 16, 16, 32), teacher_outputs=3)
    last = train_vae.train(vae_cfg(tmp_path, 1, teacher_weight=10.0, model=model, flip=0.5, colour_jitter=0.3, shift=4,
                                   random_conv=0.5), progress=False)
    assert last["val_loss"] > 0 and last["train_teacher"] > 0


def test_random_convolutions_change_what_the_encoder_sees_keeping_each_frames_level(tmp_path: Path):
    import torch

    torch.manual_seed(0)
    x = torch.rand(64, 3, 64, 64) * torch.linspace(0.2, 0.8, 64)[:, None, None, None]  # frames of different levels
    assert train_vae.Augment(0.0, 0.0).encoder_input(x) is x  # off: the frames themselves
    every = train_vae.Augment(0.0, 0.0, random_conv=1.0)
    y = every.encoder_input(x)
    assert y.shape == x.shape and 0 <= y.min() and y.max() <= 1 and every
    assert not (y == x).flatten(1).all(1).any()
    # each frame keeps its own mean (up to the clipping to [0, 1]), whatever the kernel did to it
    torch.testing.assert_close(y.mean((1, 2, 3)), x.mean((1, 2, 3)), atol=0.03, rtol=0)
    # a fresh kernel per frame: the same frame twice in one batch comes out two ways
    twins = every.encoder_input(torch.stack([x[0], x[0]]))
    assert not torch.equal(twins[0], twins[1])
    half = train_vae.Augment(0.0, 0.0, random_conv=0.5).encoder_input(x)
    kept = (half == x).flatten(1).all(1)
    assert 10 < int(kept.sum()) < 54
    with pytest.raises(ValueError, match="--random-conv"):
        vae_cfg(tmp_path, 1, random_conv=1.5)


def test_train_vae_init_starts_from_another_vaes_weights(tmp_path: Path):
    tiny_collection(tmp_path / "data")
    train_vae.train(vae_cfg(tmp_path, 2), progress=False)
    first = load_checkpoint(tmp_path / "ck" / "vae.last.pt", "vae")["history"]
    cfg = train_vae.TrainVAEConfig(**{**vars(vae_cfg(tmp_path, 1)), "run": str(tmp_path / "ft"), "init": str(tmp_path / "ck" / "vae.pt")})
    tuned = train_vae.train(cfg, progress=False)
    assert tuned["train_loss"] < first[0]["train_loss"]  # went on from trained weights, not from scratch
    other = VAEConfig(z_dim=4, channels=(8, 16, 16, 32))
    with pytest.raises(VmcError, match="architecture"):
        train_vae.train(train_vae.TrainVAEConfig(**{**vars(cfg), "run": str(tmp_path / "ft2"), "model": other}), progress=False)


def test_train_vae_resume_continues_the_epoch_count(tmp_path: Path):
    tiny_collection(tmp_path / "data")
    train_vae.train(vae_cfg(tmp_path, 1), progress=False)
    with pytest.raises(VmcError, match="--resume"):
        train_vae.train(vae_cfg(tmp_path, 2), progress=False)
    last = train_vae.train(vae_cfg(tmp_path, 2, resume=True), progress=False)
    hist = load_checkpoint(tmp_path / "ck" / "vae.last.pt", "vae")["history"]
    assert last["epoch"] == 2 and [h["epoch"] for h in hist] == [1, 2]


def test_train_mdn_resume_and_dream_video(tmp_path: Path):
    import imageio.v2 as imageio

    tiny_collection(tmp_path / "data")
    vcfg = vae_cfg(tmp_path, 1)
    train_vae.train(vcfg, progress=False)
    latents = train_vae.encode(vcfg)
    cfg = train_mdn.TrainMDNConfig(run=str(tmp_path / "ck"), epochs=1, steps_per_epoch=5, seq_len=8, batch_size=4,
                                   model=MDNRNNConfig(z_dim=8, hidden=16, gaussians=2))
    assert cfg.latents_path == latents and cfg.vae_path == tmp_path / "ck" / "vae.pt"
    train_mdn.train(cfg, progress=False)
    cfg.epochs = 3
    cfg.resume = True
    last = train_mdn.train(cfg, progress=False)
    assert last["epoch"] == 3
    assert [h["epoch"] for h in load_checkpoint(tmp_path / "ck" / "mdn.last.pt", "mdn")["history"]] == [1, 2, 3]
    assert (tmp_path / "ck" / "mdn_loss.png").is_file() and (tmp_path / "ck" / "mdn.json").is_file()
    video = train_mdn.dream_video(tmp_path / "ck" / "vae.pt", tmp_path / "ck" / "mdn.pt", latents, tmp_path / "dream.mp4", steps=10)
    frames = imageio.mimread(video)
    assert len(frames) == 11 and frames[0].shape == (256, 512, 3)


def test_cli_names_a_corrupt_checkpoint(tmp_path: Path, capsys):
    tiny_collection(tmp_path / "data")
    bad = tmp_path / "vae.pt"
    bad.write_bytes(b"not a checkpoint")
    code = train_mdn.main(["--run", str(tmp_path / "r"), "--latents", str(tmp_path / "nope.h5"), "--no-video"])
    assert code == 2 and "nope.h5" in capsys.readouterr().err
    with pytest.raises(CheckpointError, match="vae.pt"):
        train_vae.encode(train_vae.TrainVAEConfig(data=str(tmp_path / "data"), run=str(tmp_path)))
