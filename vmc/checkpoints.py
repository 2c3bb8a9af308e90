"""Checkpoints on disk and the models in them: the one place that reads and writes ``.pt`` files.

Every file is read with ``torch.load(weights_only=True)``: tensors, numbers, strings, bytes, lists and dicts
only, so loading a file someone shared runs no code. (The one pickled object vmc keeps, the CMA-ES state, is
stored as bytes inside ``evolve.pt`` and unpickled by ``vmc.evolve`` on resume only: that file is local
resume state, not something to share.)

A checkpoint is a dict with ``kind`` (``vae``, ``mdn``, ``controller``, ``evolve``...), ``vmc_version``, the
resolved ``config`` of the stage that wrote it and a ``fingerprint`` of its model weights (a hash that later
stages record to know which model they were built on). ``<name>.json`` beside it holds the same metadata.

A controller checkpoint (``best.pt``) embeds the VAE and MDN-RNN it was evolved with, so it plays wherever it
is copied (:func:`load_agent`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

import vmc
from vmc.cli import plain
from vmc.errors import CheckpointError
from vmc.models.controller import Controller, Stillness, WorldModelAgent, controller_hidden
from vmc.models.mdn import MDNRNN, MDNRNNConfig
from vmc.models.vae import ConvVAE, VAEConfig


def fingerprint(state_dict: dict[str, torch.Tensor]) -> str:
    """A short hash of a model's weights (names, shapes and values): equal weights, equal fingerprint."""
    h = hashlib.sha256()
    for name in sorted(state_dict):
        t = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()[:16]


def _safe(obj: Any) -> Any:
    """numpy values → tensors and Python numbers, so that ``weights_only`` loading accepts the file."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        return {k: _safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_safe(v) for v in obj)
    return obj


def save_checkpoint(path: Path, kind: str, payload: dict, config: Any) -> None:
    """Write ``payload`` atomically with ``kind``, the resolved config (a :class:`vmc.cli.Config` or dict), the
    package version and the fingerprint of ``payload['model']`` if present; the metadata also as JSON beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = config.record() if hasattr(config, "record") else plain(config)
    meta = {"kind": kind, "vmc_version": vmc.__version__, "config": record}
    if "model" in payload:
        meta["fingerprint"] = fingerprint(payload["model"])
    tmp = path.with_name(path.name + ".tmp")
    torch.save(_safe({**payload, **meta}), tmp)
    tmp.replace(path)
    side = path.with_suffix(".json")
    extra = {k: payload[k] for k in ("epoch", "generation", "fitness", "built_on") if k in payload}
    side.with_name(side.name + ".tmp").write_text(json.dumps({**meta, **plain(_json_safe(extra)), "checkpoint": path.name},
                                                             indent=2))
    side.with_name(side.name + ".tmp").replace(side)


def _json_safe(d: dict) -> dict:
    return {k: (v.item() if isinstance(v, (np.generic, torch.Tensor)) and np.size(v) == 1 else v) for k, v in d.items()}


def load_checkpoint(path: Path, kind: str | tuple[str, ...], map_location: Any = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint` without running any code from it; raises
    :class:`CheckpointError` naming the file when it is missing, corrupt, unsafe or not of ``kind``."""
    path = Path(path)
    kinds = (kind,) if isinstance(kind, str) else kind
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged or unsafe file
        if "Weights only load failed" in str(err):
            raise CheckpointError(f"{path}: refused: the file holds objects other than tensors, numbers, strings, "
                                  "lists and dicts (loading it could run code)") from None
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(err).__name__}: "
                              f"{str(err).splitlines()[0] if str(err) else ''})") from None
    if not isinstance(ckpt, dict) or ckpt.get("kind") not in kinds:
        found = ckpt.get("kind") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: not a {' or '.join(kinds)} checkpoint (found {found!r})")
    return ckpt


def vae_from(ckpt: dict, device: torch.device | str = "cpu") -> ConvVAE:
    """The ConvVAE of a ``vae`` checkpoint dict (or of the ``vae`` entry embedded in a controller), in eval mode."""
    model = ConvVAE(VAEConfig(**ckpt["config"]["model"])).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def mdn_from(ckpt: dict, device: torch.device | str = "cpu") -> MDNRNN:
    """The MDN-RNN of an ``mdn`` checkpoint dict (or embedded entry), in eval mode."""
    model = MDNRNN(MDNRNNConfig(**ckpt["config"]["model"])).to(device)
    model.load_state_dict(ckpt["model"])
    return model.eval()


def load_vae(path: Path, device: torch.device | str = "cpu") -> ConvVAE:
    """The ConvVAE stored in a ``vae`` checkpoint, in eval mode."""
    return vae_from(load_checkpoint(Path(path), "vae", map_location=device), device)


def load_mdn(path: Path, device: torch.device | str = "cpu") -> MDNRNN:
    """The MDN-RNN stored in an ``mdn`` checkpoint, in eval mode."""
    return mdn_from(load_checkpoint(Path(path), "mdn", map_location=device), device)


def model_entry(ckpt: dict) -> dict:
    """What a controller embeds of a VAE or MDN-RNN checkpoint: weights, architecture and fingerprint."""
    return {"model": ckpt["model"], "config": {"model": ckpt["config"]["model"]}, "fingerprint": ckpt["fingerprint"]}


class WorldModels:
    """A VAE and MDN-RNN pair as plain data (weights and architectures), and whether the controller also takes the
    :class:`Stillness` input computed from the VAE's latents: what workers are sent and what a controller checkpoint
    embeds. Build the modules with :meth:`vae` and :meth:`mdn`."""

    def __init__(self, vae: dict, mdn: dict, still: Optional[Stillness] = None) -> None:
        self.vae_entry, self.mdn_entry, self.still = vae, mdn, still

    @classmethod
    def untrained(cls, vae: Optional[VAEConfig] = None, mdn: Optional[MDNRNNConfig] = None) -> WorldModels:
        """Freshly initialised models of the given architectures (the defaults: World Models' sizes): what a benchmark
        times when no trained ones are at hand (the cost of a step does not depend on the weights)."""

        def entry(model: torch.nn.Module) -> dict:
            return model_entry({"model": model.state_dict(), "config": {"model": plain(model.config)},
                                "fingerprint": fingerprint(model.state_dict())})

        return cls(entry(ConvVAE(vae)), entry(MDNRNN(mdn)))

    @classmethod
    def load(cls, vae_path: Path, mdn_path: Path) -> WorldModels:
        return cls(model_entry(load_checkpoint(Path(vae_path), "vae")), model_entry(load_checkpoint(Path(mdn_path), "mdn")))

    def vae(self) -> ConvVAE:
        return vae_from(self.vae_entry)

    def mdn(self) -> MDNRNN:
        return mdn_from(self.mdn_entry)

    @property
    def z_dim(self) -> int:
        return int(self.vae_entry["config"]["model"]["z_dim"])

    @property
    def h_dim(self) -> int:
        return int(self.mdn_entry["config"]["model"]["hidden"])

    @property
    def n_inputs(self) -> int:
        """The controller's inputs: [z, h], and s with the stillness input."""
        return self.z_dim + self.h_dim + (self.still is not None)

    def n_params(self, hidden: int = 0) -> int:
        """Parameters of a controller on :attr:`n_inputs`: linear (``hidden`` 0) or with ``hidden`` tanh units."""
        return Controller.size(self.n_inputs, hidden)

    def hidden_of(self, params: np.ndarray) -> int:
        """The hidden units of the controller whose flat parameters are ``params`` (0: linear); a count that fits
        no controller on these models' inputs raises :class:`CheckpointError`."""
        try:
            return controller_hidden(self.n_inputs, np.asarray(params).size)
        except ValueError as err:
            raise CheckpointError(str(err)) from None

    def built_on(self) -> dict[str, str]:
        """Fingerprints of the two models (recorded by the stages built on them)."""
        return {"vae": self.vae_entry["fingerprint"], "mdn": self.mdn_entry["fingerprint"]}

    def agent(self, params: Optional[np.ndarray] = None, runtime: str = "onnxruntime") -> WorldModelAgent:
        """A :class:`WorldModelAgent` over these models with the controller of flat parameters ``params`` (linear or
        with hidden units, told by their number; None: a linear one of zeros), its graphs run by ``runtime`` (one
        of :attr:`WorldModelAgent.RUNTIMES`)."""
        controller = Controller(self.z_dim, self.h_dim, hidden=0 if params is None else self.hidden_of(params),
                                still=self.still is not None)
        if params is not None:
            controller.set_flat(params)
        return WorldModelAgent(self.vae(), self.mdn(), controller, runtime, self.still)


def save_controller(path: Path, models: WorldModels, params: np.ndarray, info: dict, config: Any) -> None:
    """``best.pt``: the controller's parameters with the VAE and MDN-RNN it drives with embedded, plus ``info``
    (fitness, generation, tracks, max_steps...)."""
    save_checkpoint(path, "controller", {"params": torch.as_tensor(np.asarray(params, np.float64)), "z_dim": models.z_dim,
                                         "h_dim": models.h_dim, "vae": models.vae_entry, "mdn": models.mdn_entry,
                                         "still": plain(models.still),
                                         "built_on": models.built_on(), **info}, config)


def load_controller(path: Path) -> tuple[dict, WorldModels]:
    """A controller checkpoint and the world models embedded in it."""
    ck = load_checkpoint(Path(path), "controller")
    try:
        still = ck.get("still")
        models = WorldModels(ck["vae"], ck["mdn"], None if still is None else Stillness(**still))
        params = np.asarray(ck["params"], np.float64)
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path}: controller checkpoint without embedded models ({err}); evolve it again") from None
    try:
        models.hidden_of(params)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    ck["params"] = params
    return ck, models


def load_dream_controller(path: Path) -> tuple[dict, WorldModels]:
    """:func:`load_controller` for a controller the dream is to drive: one on the stillness input is refused (the
    MDN-RNN does not model it)."""
    ck, models = load_controller(path)
    if models.still is not None:
        raise CheckpointError(f"{path}: its controller takes the stillness input, which the dream does not model")
    return ck, models


def load_agent(path: Path) -> WorldModelAgent:
    """The :class:`WorldModelAgent` of a controller checkpoint, from the models embedded in it."""
    ck, models = load_controller(path)
    return models.agent(ck["params"])


def controller_or_untrained(path: Path) -> tuple[np.ndarray, WorldModels, str]:
    """The parameters and models of a controller checkpoint if ``path`` is one, else untrained models of World
    Models' sizes with a full-throttle controller (it drives off straight ahead; a step costs the same); and a
    description of which. What the benchmarks time."""
    if Path(path).is_file():
        ck, models = load_controller(Path(path))
        return ck["params"], models, str(path)
    models = WorldModels.untrained()
    params = np.zeros(models.n_params())
    params[-2] = 3.0  # the acceleration's bias: sigmoid(3) = 0.95
    return params, models, "untrained controller (no checkpoint)"

