"""The driving agent's graphs on a CPU: exported to ONNX in memory and run by ONNX Runtime, one thread.

Why not torch: a driving agent encodes one frame right after the game's llvmpipe render, which evicts the
encoder's weights and torch's own dispatch code from the caches. Measured on this project's 2-core machine
(README, Performance): one frame's encode 0.39 ms after a render with ONNX Runtime against 1.5 ms for the traced,
frozen torch graph (0.16 against 0.44 ms when run alone), same outputs to 1e-6.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from torch import nn


class ExportedGraph:
    """``module`` traced with ``example`` inputs, exported to ONNX (in memory: nothing is written or loaded from
    disk) and run by ONNX Runtime on one CPU thread. ``graph(*arrays) -> list of arrays``, inputs in the order
    of ``inputs``. The weights are copied in: later changes to ``module`` are not seen."""

    def __init__(self, module: nn.Module, example: tuple[torch.Tensor, ...], inputs: list[str], outputs: list[str]) -> None:
        import onnxruntime as ort

        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript and
            # seconds per graph; these graphs are plain convolutions and an LSTM cell, which it exports exactly.
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), example, buffer, dynamo=False, input_names=inputs, output_names=outputs)
        options = ort.SessionOptions()
        # One thread: game workers already use every core, one process each.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.inputs = inputs

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.inputs, arrays)))
