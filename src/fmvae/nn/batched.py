"""A stack of M independent multi-layer perceptrons evaluated as one batched computation.

Weights are stored as tensors of shape (M, fan_in, fan_out) and biases as (M, 1, fan_out); a
forward pass maps inputs of shape (M, N, fan_in) to (M, N, fan_out) by a chain of batched matrix
products. Each model owns its own slice of every parameter; gradients never mix across models
because the loss is a sum of per-model terms.

How the stack is computed (measured on 100 VAEs of the benchmark's shape, 3×50 hidden, batch 100,
2 threads of a 2-core CPU):

* The whole MLP is one autograd function with a hand-written backward pass, and each hidden
  layer's leaky ReLU runs in place: its backward pass reads the sign of the layer's output, which
  is the sign of its input for a slope ≥ 0, so one tensor per layer is saved instead of two, and
  autograd keeps one node per network instead of two per layer. Against one autograd node per
  layer with an out-of-place leaky ReLU, this took the trainer from about 12 700 to 14 000–15 000
  model-steps/s on 100 VAEs, and was no slower at 1 or 10 (interleaved runs).
* :func:`_bmm` picks the orientation of a product whose result would have one or two columns: CPU
  BLAS runs such a stack several times slower than the same product transposed (a 50→2 layer's
  forward on 100 models, one thread: 344 → 81 µs; its weight gradient 372 → 78 µs).
* Tried and dropped: channel-major activations with the wide layers as grouped 1×1 convolutions
  (oneDNN). 5–15% faster at 100–400 models, but half as fast at 25 or 75, depending on how the
  library blocks the groups.

``tests/test_nn.py`` checks values and gradients against plain autograd.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F


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


class _Stack(torch.autograd.Function):
    """Every model's MLP ``x → (leaky ReLU ∘ layer)… → layer`` on inputs (M, N, fan_in)."""

    @staticmethod
    def forward(ctx, negative_slope: float, x: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        weights, biases = params[0::2], params[1::2]
        h = x
        inputs = [x]  # each layer's input: what its weight gradient needs
        for i, (w, b) in enumerate(zip(weights, biases)):
            h = _bmm(h, w, b)
            if i < len(weights) - 1:
                h = F.leaky_relu_(h.contiguous(), negative_slope)
                inputs.append(h)
        ctx.negative_slope = negative_slope
        ctx.save_for_backward(*inputs, *weights)
        return h

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        saved = ctx.saved_tensors
        layers = len(saved) // 2
        inputs, weights = saved[:layers], saved[layers:]
        need_x, need = ctx.needs_input_grad[1], ctx.needs_input_grad[2:]
        grads: list[torch.Tensor | None] = [None] * (2 * layers)
        for i in reversed(range(layers)):
            if need[2 * i]:
                grads[2 * i] = _bmm(inputs[i].transpose(1, 2), g)
            if need[2 * i + 1]:
                grads[2 * i + 1] = g.sum(1, keepdim=True)
            if i > 0 or need_x:
                g = _bmm(g, weights[i].transpose(1, 2))
                if i > 0:  # through the leaky ReLU, from the sign of its output (slope ≥ 0)
                    g = torch.ops.aten.leaky_relu_backward.grad_input(g, inputs[i], ctx.negative_slope, True, grad_input=g)
        return None, (g if need_x else None), *grads


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
        if negative_slope < 0:  # the backward pass reads the sign of each activation's output
            raise ValueError(f"negative_slope must be >= 0, got {negative_slope}")
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
        params = [p for layer in zip(self.weights, self.biases) for p in layer]
        return _Stack.apply(self.negative_slope, x, *params)

    def state_arrays(self) -> dict[str, torch.Tensor]:
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

    def select(self, index: int) -> BatchedMLP:
        """A one-model stack holding a copy of model ``index``."""
        single = BatchedMLP(1, self.sizes, self.negative_slope)
        single.load_arrays({k: v[index : index + 1] for k, v in self.state_arrays().items()})
        return single
