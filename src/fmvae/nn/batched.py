"""A stack of M independent multi-layer perceptrons evaluated as one batched computation.

Weights are stored as tensors of shape (M, fan_in, fan_out), so a forward pass over inputs of
shape (M, N, fan_in) is a chain of batched matrix products. Each model owns its own slice of every
parameter; gradients never mix across models because the loss is a sum of per-model terms.

CPU BLAS runs a stack of small products several times slower when the result has one or two
columns (a layer into D = 2 or K = 1) than the same product transposed, so :func:`batched_linear`
picks the orientation of each product, forward and backward (measured on 100 models, batch 100,
one thread: a 50→2 layer's forward 344 → 81 µs and weight gradient 372 → 78 µs).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn


def _bmm(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b (+ bias)`` for stacks (M, p, q) @ (M, q, r), in the orientation that suits BLAS."""
    p, q, r = a.shape[-2], b.shape[-2], b.shape[-1]
    if q == 1:  # an outer product: no reduction, plain broadcasting
        out = a * b
    elif r <= 2 < q and p > r:  # a thin result: compute its transpose, which has p columns
        out = torch.bmm(b.transpose(1, 2), a.transpose(1, 2)).transpose(1, 2)
    elif bias is not None:
        return torch.baddbmm(bias, a, b)
    else:
        return torch.bmm(a, b)
    return out if bias is None else out + bias


class _BatchedLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b):
        ctx.save_for_backward(h, w)
        return _bmm(h, w, b)

    @staticmethod
    def backward(ctx, grad):
        h, w = ctx.saved_tensors
        need_h, need_w, need_b = ctx.needs_input_grad
        return (_bmm(grad, w.transpose(1, 2)) if need_h else None,
                _bmm(h.transpose(1, 2), grad) if need_w else None,
                grad.sum(1, keepdim=True) if need_b else None)


def batched_linear(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``h @ w + b`` for a stack of models: h (M, N, fan_in), w (M, fan_in, fan_out), b (M, 1, fan_out)."""
    return _BatchedLinear.apply(h, w, b)


class BatchedMLP(nn.Module):
    """M leaky-ReLU MLPs with layer sizes ``sizes`` (input, hidden..., output).

    With ``seeds`` (one per model) each model's initial weights come from its own random stream,
    so a model starts the same whichever other models share its stack.
    """

    def __init__(
        self,
        n_models: int,
        sizes: Sequence[int],
        negative_slope: float = 0.01,
        generator: torch.Generator | None = None,
        seeds: Sequence[int] | None = None,
    ):
        super().__init__()
        if n_models < 1 or len(sizes) < 2:
            raise ValueError(f"need n_models >= 1 and at least two layer sizes, got {n_models}, {sizes}")
        self.n_models = n_models
        self.sizes = tuple(int(s) for s in sizes)
        self.negative_slope = float(negative_slope)
        if seeds is not None and len(seeds) != n_models:
            raise ValueError(f"need one seed per model, got {len(seeds)} for {n_models}")
        generators = ([torch.Generator().manual_seed(int(s)) for s in seeds] if seeds is not None
                      else [generator])
        per_draw = n_models if seeds is None else 1
        shapes = list(zip(self.sizes[:-1], self.sizes[1:]))
        # PyTorch's nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases.
        draws = [[((torch.rand(per_draw, fan_in, fan_out, generator=g) * 2 - 1),
                   (torch.rand(per_draw, 1, fan_out, generator=g) * 2 - 1))
                  for fan_in, fan_out in shapes] for g in generators]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, _) in enumerate(shapes):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.cat([d[layer][0] for d in draws]) * bound))
            self.biases.append(nn.Parameter(torch.cat([d[layer][1] for d in draws]) * bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map (M, N, sizes[0]) to (M, N, sizes[-1]); a (N, sizes[0]) input is shared by all models."""
        if x.dim() == 2:
            x = x.unsqueeze(0).expand(self.n_models, -1, -1)
        h = x
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = batched_linear(h, w, b)
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

    def set_models(self, indices, arrays: dict) -> None:
        """Overwrite models ``indices`` with one model's arrays (``W{i}`` of shape (fan_in, fan_out))."""
        with torch.no_grad():
            for i, (w, b) in enumerate(zip(self.weights, self.biases)):
                w[indices] = torch.as_tensor(arrays[f"W{i}"], dtype=w.dtype).reshape(w.shape[1:])
                b[indices] = torch.as_tensor(arrays[f"b{i}"], dtype=b.dtype).reshape(b.shape[1:])

    def select(self, index: int) -> "BatchedMLP":
        """A one-model stack holding a copy of model ``index``."""
        single = BatchedMLP(1, self.sizes, self.negative_slope)
        single.load_arrays({k: v[index : index + 1] for k, v in self.state_arrays().items()})
        return single
