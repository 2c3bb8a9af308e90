"""The driving agent's graphs on a CPU: exported to ONNX in memory and run by ONNX Runtime, one thread.

Why not torch: a driving agent runs one frame right after the game's llvmpipe render, which evicts the
encoder's weights and torch's own dispatch code from the caches, and each of torch's many small calls pays for
it. Measured on this project's 2-core machine (``benchmarks/race_speed.py``, docs/performance.md): the agent's
whole step 0.49 ms in a race on ONNX Runtime against 1.79 ms in torch with a traced, frozen encoder (run alone,
in a loop, torch's takes about 0.5 ms), the same outputs to 1e-5.
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
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            # A trace that depends on the data would export a graph that is only right for the example.
            warnings.simplefilter("error", torch.jit.TracerWarning)
            torch.onnx.export(module.eval(), example, buffer, dynamo=False, input_names=inputs, output_names=outputs)
        options = ort.SessionOptions()
        # One thread: game workers already use every core, one process each.
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        self.inputs = inputs

    def __call__(self, *arrays: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, dict(zip(self.inputs, arrays)))
