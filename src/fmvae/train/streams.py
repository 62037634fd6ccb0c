"""One random stream per model: data order, reparameterisation noise and LIN's fresh batches.

Model m draws only from its own ``torch.Generator`` (seeded from its own seed), and only for
itself, so its random numbers do not depend on which other models share the stack. Draws are
made per epoch (permutations, noise) to keep the per-model Python cost off the step loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class ModelStreams:
    def __init__(self, seeds: Sequence[int]):
        self.generators = [torch.Generator().manual_seed(int(s)) for s in seeds]

    def __len__(self) -> int:
        return len(self.generators)

    def permutations(self, n: int) -> torch.Tensor:
        """(M, n): a fresh permutation of range(n) per model."""
        return torch.stack([torch.randperm(n, generator=g) for g in self.generators])

    def normal(self, shape: Sequence[int], samples: Sequence[int] | None = None, axis: int = -2,
               active: torch.Tensor | None = None) -> torch.Tensor:
        """(M, *shape) standard normals. With ``samples``, model m draws only ``samples[m]`` entries
        along ``axis`` (of size max(samples)) and the rest are zero; inactive models draw nothing."""
        out = torch.zeros(len(self), *shape)
        for m, g in enumerate(self.generators):
            if active is not None and not bool(active[m]):
                continue
            own = list(shape)
            if samples is not None:
                own[axis] = int(samples[m])
            draw = torch.randn(*own, generator=g)
            index = [slice(None)] * len(shape)
            index[axis] = slice(0, own[axis])
            out[m][tuple(index)] = draw
        return out

    def randint(self, high: int, shape: Sequence[int], active: torch.Tensor | None = None) -> torch.Tensor:
        """(M, *shape) integers in [0, high); inactive models draw nothing (and get zeros)."""
        out = torch.zeros(len(self), *shape, dtype=torch.long)
        for m, g in enumerate(self.generators):
            if active is None or bool(active[m]):
                out[m] = torch.randint(high, tuple(shape), generator=g)
        return out

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state(self, states: list[torch.Tensor]) -> None:
        for g, s in zip(self.generators, states):
            g.set_state(s)
