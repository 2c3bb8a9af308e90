"""train_vae and train_mdn end to end on tiny synthetic collections: files, resume, errors (no game)."""

from pathlib import Path

import h5py
import numpy as np
import pytest

from vmc import train_mdn, train_vae
from vmc.data import Episode, write_episode
from vmc.models import MDNRNNConfig, VAEConfig
from vmc.training import load_checkpoint


def tiny_collection(folder: Path, episodes: int = 12, steps: int = 20) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(episodes):
        rng = np.random.default_rng(i)
        obs = np.zeros((steps + 1, 64, 64, 3), np.uint8)
        for t in range(steps + 1):  # a bar that moves: something to encode and to predict
            obs[t, :, (i + 3 * t) % 60:(i + 3 * t) % 60 + 4] = (200, 120, 40)
            obs[t, 40:] += np.uint8(60)
        write_episode(folder / f"shard-{i % 2}.h5", Episode(
            observations=obs, actions=rng.uniform(0, 1, (steps, 3)).astype(np.float32),
            rewards=np.full(steps, 0.5, np.float32), terminations=np.eye(1, steps, steps - 1, dtype=bool)[0],
            truncations=np.zeros(steps, bool), distance=np.zeros(steps + 1, np.float32),
            off_track=np.zeros(steps + 1, bool), speed=np.zeros(steps + 1, np.float32),
            attrs={"track": "lighthouse", "policy": "mix", "seed": i, "index": i, "score": 0.0, "end": "lap"}))
    return folder


SMALL_VAE = VAEConfig(z_dim=8, channels=(8, 16, 16, 32))


def vae_cfg(tmp_path: Path, epochs: int) -> train_vae.TrainVAEConfig:
    return train_vae.TrainVAEConfig(data=str(tmp_path / "data"), out=str(tmp_path / "ck" / "vae.pt"), epochs=epochs,
                                    batch_size=32, val_fraction=0.25, model=SMALL_VAE)


def test_train_vae_writes_checkpoints_pictures_and_latents(tmp_path: Path):
    tiny_collection(tmp_path / "data")
    last = train_vae.train(vae_cfg(tmp_path, 2), progress=False)
    ck = tmp_path / "ck"
    assert last["epoch"] == 2 and last["val_loss"] > 0
    for name in ("vae.pt", "vae.last.pt", "vae.json", "vae_loss.png", "vae_recon_epoch001.png", "vae_recon_epoch002.png"):
        assert (ck / name).is_file(), name
    hist = load_checkpoint(ck / "vae.last.pt", "vae")["history"]
    assert hist[1]["train_loss"] < hist[0]["train_loss"]
    latents = train_vae.encode_dataset(ck / "vae.pt", tmp_path / "data", tmp_path / "ck" / "latents.h5", 0.25)
    with h5py.File(latents) as f:
        g = f["ep_0000000"]
        assert g["mu"].shape == (21, 8) and g["logvar"].shape == (21, 8) and g["actions"].shape == (20, 3)
        assert {f[k].attrs["split"] for k in f} == {"train", "val"}


def test_train_vae_resume_continues_the_epoch_count(tmp_path: Path):
    tiny_collection(tmp_path / "data")
    train_vae.train(vae_cfg(tmp_path, 1), progress=False)
    with pytest.raises(SystemExit, match="--resume"):
        train_vae.train(vae_cfg(tmp_path, 2), progress=False)
    last = train_vae.train(vae_cfg(tmp_path, 2), resume=True, progress=False)
    hist = load_checkpoint(tmp_path / "ck" / "vae.last.pt", "vae")["history"]
    assert last["epoch"] == 2 and [h["epoch"] for h in hist] == [1, 2]


def test_train_mdn_resume_and_dream_video(tmp_path: Path):
    import imageio.v2 as imageio

    tiny_collection(tmp_path / "data")
    train_vae.train(vae_cfg(tmp_path, 1), progress=False)
    latents = train_vae.encode_dataset(tmp_path / "ck" / "vae.pt", tmp_path / "data", tmp_path / "lat.h5", 0.25)
    cfg = train_mdn.TrainMDNConfig(latents=str(latents), vae=str(tmp_path / "ck" / "vae.pt"), out=str(tmp_path / "ck" / "mdn.pt"),
                                   epochs=1, steps_per_epoch=5, seq_len=8, batch_size=4,
                                   model=MDNRNNConfig(z_dim=8, hidden=16, gaussians=2))
    train_mdn.train(cfg, progress=False)
    cfg.epochs = 3
    last = train_mdn.train(cfg, resume=True, progress=False)
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
    code = train_mdn.main(["--latents", str(tmp_path / "nope.h5"), "--out", str(tmp_path / "mdn.pt"), "--no-video"])
    assert code == 1 and "nope.h5" in capsys.readouterr().err
    with pytest.raises(Exception, match="vae.pt"):
        train_vae.encode_dataset(bad, tmp_path / "data", tmp_path / "lat.h5")
