"""ConvVAE (and MDN-RNN) training speed on a real collection: today's defaults against the previous ones, one run.

The previous way (``before``): frames read and decompressed from the shards every epoch, float32, the
decoder's first transposed convolution run as a convolution, and Adam as torch's loop over the parameters.
Today's defaults (``after``): the training frames decompressed into memory once, bfloat16 autocast where the CPU
has bfloat16 units, channels-last tensors, that first layer as the matrix product it is, and Adam's fused kernel
(``vmc.training.adam``); ``after, Adam loop`` is today's defaults with the unfused Adam, and ``after, weight copy``
with the weights channels-last and the decoder's first weight flattened by a copy every step (as until 2026-12-07;
``before`` has channels-last weights too); ``after, decoder 2 fp32`` runs the decoder's second layer in float32. All train from the same
seed for the same epochs on the same frames; the table gives frames/s per epoch and the validation loss after
each, with the ratios to ``before``.
``--batch BATCH:LR`` adds today's defaults with another batch size and learning rate (repeatable).

    python benchmarks/train_speed.py --data data/lighthouse-small --epochs 3 [--batch 256:0.002]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch


def _channels_last_weights(decode=None):
    """ConvVAE as train_vae built it until 2026-12-07, weights channels-last (the fused Adam then copies them every
    step, and ``decode`` flattens the first one by a copy), with ``decode`` in place of today's when given."""
    from vmc.models import ConvVAE

    class Before(ConvVAE):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.to(memory_format=torch.channels_last)

    if decode is not None:
        Before.decode = decode
    return Before


def _decode_as_convolution(self, z: torch.Tensor) -> torch.Tensor:
    """ConvVAE.decode as it was first: the 1x1 map through the first transposed convolution."""
    return self.decoder(self.fc_decode(z).unsqueeze(-1).unsqueeze(-1))


class _Fp32(torch.nn.Module):
    """``layer`` run in float32 outside autocast."""

    def __init__(self, layer: torch.nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return self.layer(x.float())


def _fp32_decoder_2():
    """ConvVAE with the decoder's second layer (the transposed convolution 128 → 64, 5x5 → 13x13) in float32 outside
    bf16 autocast, where this layer measured faster on an AVX-512 CPU (NEXT_STEPS 3; not adopted)."""
    from vmc.models import ConvVAE

    class Fp32Decoder2(ConvVAE):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.decoder[2] = _Fp32(self.decoder[2])  # after the first layer (a product) and its ReLU

    return Fp32Decoder2


def _adam_loop(params, lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam as it was: torch's default on the CPU, a loop of tensor operations per parameter."""
    return torch.optim.Adam(params, lr=lr)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/lighthouse-small")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--mdn-steps", type=int, default=100, help="MDN-RNN optimiser steps per variant")
    p.add_argument("--device", default="cpu", help="where both models train: cpu, cuda, auto (CUDA when present)")
    p.add_argument("--batch", action="append", default=[], metavar="BATCH:LR",
                   help="also today's defaults with this batch size and learning rate (repeatable)")
    a = p.parse_args()
    variants = [("before", {"in_memory": False, "precision": "fp32"}), ("after", {}), ("after, Adam loop", {}),
                ("after, weight copy", {}), ("after, decoder 2 fp32", {})]
    for spec in a.batch:
        size, lr = spec.split(":")
        variants.append((f"b{size} lr {lr}", {"batch_size": int(size), "lr": float(lr)}))

    from vmc import train_mdn, train_vae
    from vmc.training import pick_device, use_bf16

    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, overrides in variants:
            cfg = train_vae.TrainVAEConfig(data=a.data, run=str(Path(tmp) / name), epochs=a.epochs, device=a.device,
                                           **overrides)
            original, fused = train_vae.ConvVAE, train_vae.adam
            if name == "before":
                train_vae.ConvVAE = _channels_last_weights(_decode_as_convolution)
            if name == "after, weight copy":
                train_vae.ConvVAE = _channels_last_weights()
            if name == "after, decoder 2 fp32":
                train_vae.ConvVAE = _fp32_decoder_2()
            if name in ("before", "after, Adam loop"):
                train_vae.adam = _adam_loop
            try:
                t0 = time.perf_counter()
                train_vae.train(cfg, progress=False)
                wall = time.perf_counter() - t0
            finally:
                train_vae.ConvVAE, train_vae.adam = original, fused
            from vmc.checkpoints import load_checkpoint

            rows[name] = (load_checkpoint(cfg.out.with_name("vae.last.pt"), "vae")["history"], wall)
            if name == "after":
                train_vae.encode(cfg)
                latents = cfg.latents
        mdn_rows = {}
        for name, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("fp32, Adam loop", "fp32")):
            mcfg = train_mdn.TrainMDNConfig(run=str(Path(tmp) / f"mdn-{name}"), latents=str(latents), epochs=1,
                                            steps_per_epoch=a.mdn_steps, video=False, precision=precision,
                                            device=a.device)
            fused = train_mdn.adam
            if "Adam loop" in name:
                train_mdn.adam = _adam_loop
            try:
                mdn_rows[name] = train_mdn.train(mcfg, progress=False)
            finally:
                train_mdn.adam = fused

    print(f"\ntrain_speed: {a.data}, {a.epochs} epochs, {torch.get_num_threads()} threads, {os.cpu_count()} cores, "
          f"device {a.device}, bf16 autocast in 'after': {use_bf16('auto', pick_device(a.device))}")
    print(f"{'variant':>18} {'epoch':>5} {'frames/s':>9} {'ratio':>6} {'val loss':>9} {'ratio':>6}")
    before, wb = rows["before"]
    for name, (hist, wall) in rows.items():
        for b, f in zip(before, hist):
            print(f"{name:>18} {f['epoch']:>5} {f['frames_per_s']:9.1f} {f['frames_per_s'] / b['frames_per_s']:6.2f} "
                  f"{f['val_loss']:9.2f} {f['val_loss'] / b['val_loss']:6.3f}")
        print(f"{name:>18} {'all':>5} {'wall ' + format(wall, '.0f') + ' s':>9} {wb / wall:6.2f}")
    ref = mdn_rows["fp32, Adam loop"]
    print(f"\nMDN-RNN, {a.mdn_steps} steps:")
    for name, r in mdn_rows.items():
        print(f"{name:>18} {r['steps_per_s']:9.0f} sequence steps/s ({r['steps_per_s'] / ref['steps_per_s']:.2f}x the "
              f"Adam loop), val loss {r['val_loss']:.3f}")


if __name__ == "__main__":
    main()
