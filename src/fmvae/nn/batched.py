"""A stack of M independent multi-layer perceptrons evaluated as one batched computation.

Weights are stored as tensors of shape (M, fan_in, fan_out), so a forward pass over inputs of
shape (M, N, fan_in) is a chain of batched matrix products (``torch.baddbmm``). Each model owns
its own slice of every parameter; gradients never mix across models because the loss is a sum of
per-model terms.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


class BatchedMLP(nn.Module):
    """M leaky-ReLU MLPs with layer sizes ``sizes`` (input, hidden..., output)."""

    def __init__(
        self,
        n_models: int,
        sizes: Sequence[int],
        negative_slope: float = 0.01,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if n_models < 1 or len(sizes) < 2:
            raise ValueError(f"need n_models >= 1 and at least two layer sizes, got {n_models}, {sizes}")
        self.n_models = n_models
        self.sizes = tuple(int(s) for s in sizes)
        self.negative_slope = float(negative_slope)
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(self.sizes[:-1], self.sizes[1:]):
            # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
            bound = 1.0 / math.sqrt(fan_in)
            w = (torch.rand(n_models, fan_in, fan_out, generator=generator) * 2 - 1) * bound
            b = (torch.rand(n_models, 1, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (M, N, sizes[0]) to (M, N, sizes[-1]); a (N, sizes[0]) input is shared by all models."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = torch.nn.functional.leaky_relu(h, self.negative_slope)
        return h

    def state_arrays(self) -> dict[str, "torch.Tensor"]:
        """Parameters by name (``W0``, ``b0``, ...), detached, for storage."""
        out = {}
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            out[f"W{i}"] = w.detach().cpu()
            out[f"b{i}"] = b.detach().cpu()
        return out

    def load_arrays(self, arrays: dict) -> None:
        """Inverse of :meth:`state_arrays` (accepts numpy arrays or tensors)."""
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                w.copy_(torch.as_tensor(arrays[f"W{i}"]))
                b.copy_(torch.as_tensor(arrays[f"b{i}"]))

    def select(self, index: int) -> "BatchedMLP":
        """A one-model stack holding a copy of model ``index``."""
        single = BatchedMLP(1, self.sizes, self.negative_slope)
        single.load_arrays({k: v[index : index + 1] for k, v in self.state_arrays().items()})
        return single
