"""One random stream per model: data order, reparameterisation noise and LIN's fresh batches.

:class:`ModelStreams`: model m draws only from its own ``torch.Generator`` (seeded from its own
seed), and only for itself, so its random numbers do not depend on which other models share the
stack. Draws are made per epoch (permutations, noise) to keep the per-model Python cost off the
step loop; they are made on the CPU, model by model, and copied to the device.

:class:`CounterStreams`: the same guarantee from a counter-based generator (Philox4x32-10 keyed
by the model's seed), every model's draws made at once by elementwise integer operations on the
device: for a GPU, no per-model loop and no copy of the noise (IWAE with S = 20 at 10 000 models
draws ~4 GB of normals per epoch). ``training.streams`` picks (:func:`make_streams`).
"""

from __future__ import annotations

import math
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
        active = None if active is None else active.cpu()  # one read, not one per model
        for m, g in enumerate(self.generators):
            if active is not None and not bool(active[m]):
                continue
            own = list(shape)
            if samples is not None:
                own[axis] = int(samples[m])
            draw = torch.randn(*own, generator=g)
            if samples is None:
                out[m] = draw
                continue
            index = [slice(None)] * len(shape)
            index[axis] = slice(0, own[axis])
            out[m][tuple(index)] = draw
        return out

    def randint(self, high: int, shape: Sequence[int], active: torch.Tensor | None = None) -> torch.Tensor:
        """(M, *shape) integers in [0, high); inactive models draw nothing (and get zeros)."""
        out = torch.zeros(len(self), *shape, dtype=torch.long)
        active = None if active is None else active.cpu()
        for m, g in enumerate(self.generators):
            if active is None or bool(active[m]):
                out[m] = torch.randint(high, tuple(shape), generator=g)
        return out

    def state(self) -> list[torch.Tensor]:
        return [g.get_state() for g in self.generators]

    def load_state(self, states: list[torch.Tensor]) -> None:
        if not isinstance(states, list):
            raise TypeError("the checkpoint holds counter streams (training.streams: counter), not generators")
        for g, s in zip(self.generators, states):
            g.set_state(s)


# -- counter-based streams, drawn on the device -------------------------------------------------

_MASK32 = 0xFFFFFFFF
_PHILOX_M = (0xD2511F53, 0xCD9E8D57)  # Philox4x32's multipliers and Weyl key increments
_PHILOX_W = (0x9E3779B9, 0xBB67AE85)   # (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", 2011)
_KINDS = {"permutation": 1, "normal": 2, "randint": 3}


def _mulhilo(a: int, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """High and low 32 bits of a · b for a 32-bit constant ``a`` and 32-bit values ``b`` held in
    int64, without overflowing it: b is split into 16-bit halves, each product below 2^48."""
    low_part, high_part = a * (b & 0xFFFF), a * (b >> 16)
    t = low_part + ((high_part & 0xFFFF) << 16)
    return (high_part >> 16) + (t >> 32), t & _MASK32


def philox4x32(counter: tuple[torch.Tensor, ...], key: tuple[torch.Tensor, torch.Tensor], rounds: int = 10
               ) -> tuple[torch.Tensor, ...]:
    """Philox4x32-``rounds``: four 32-bit words (int64 tensors, broadcast together) from a 128-bit
    counter and a 64-bit key. Elementwise integer arithmetic only, so it runs as it is on any
    device and gives the same bits everywhere (checked against the published known-answer vectors)."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(rounds):
        hi0, lo0 = _mulhilo(_PHILOX_M[0], c0)
        hi1, lo1 = _mulhilo(_PHILOX_M[1], c2)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0, k1 = (k0 + _PHILOX_W[0]) & _MASK32, (k1 + _PHILOX_W[1]) & _MASK32
    return c0, c1, c2, c3


class CounterStreams:
    """One counter-based stream per model, drawn for every model in one set of device operations.

    Draw d of model m is Philox4x32-10 keyed by the model's seed, with counter (word index / 4,
    draw d, kind): each model counts its own draws (a device tensor, advanced only where the model
    is active), and an element's index is its position in the model's own array (its own number
    of samples), so a model's numbers never depend on which models share the stack or how many
    samples they take. The same interface as :class:`ModelStreams`; its arrays come back on
    ``device``; the state (the draw counters) makes a resumed run continue exactly.

    Each Philox call gives four 32-bit words. Normals: Box–Muller on pairs of words (both outputs,
    so one normal per word). Permutations: a stable argsort of 63-bit keys from pairs of words (a
    tie among 5 000 keys has probability 1e-12). Integers in [0, high): the high half of a word
    times ``high`` (bias below high / 2^32)."""

    def __init__(self, seeds: Sequence[int], device="cpu"):
        self.device = torch.device(device)
        seeds = torch.as_tensor([int(s) for s in seeds], dtype=torch.int64, device=self.device)
        self.key = (seeds & _MASK32, (seeds >> 32) & _MASK32)
        self.draws = torch.zeros(len(seeds), dtype=torch.int64, device=self.device)

    def __len__(self) -> int:
        return len(self.draws)

    CHUNK_WORDS = 1 << 24  # words per block of models (128 MB per int64 temporary)

    def _blocks(self, count: int, active: torch.Tensor | None) -> list[slice]:
        """Blocks of models whose words fit in ``CHUNK_WORDS`` (10 000 IWAE models would need
        hundreds of GB of temporaries at once); the caller advances the counters after the last."""
        per = max(1, self.CHUNK_WORDS // max(1, count))
        return [slice(i, min(i + per, len(self))) for i in range(0, len(self), per)]

    def _words(self, kind: str, count: int, rows: slice) -> torch.Tensor:
        """(models in ``rows``, count) 32-bit words (in int64): word i of model m is lane i % 4 of
        Philox at counter (i // 4, draw, kind) under the model's key."""
        calls = torch.arange((count + 3) // 4, device=self.device)[None, :]
        draw = self.draws[rows, None] & _MASK32
        zero = torch.zeros((), dtype=torch.int64, device=self.device)
        words = philox4x32((calls & _MASK32, calls >> 32, draw, zero + _KINDS[kind]),
                           (self.key[0][rows, None], self.key[1][rows, None]))
        return torch.stack(torch.broadcast_tensors(*words), -1).flatten(1)[:, :count]

    def _advance(self, active: torch.Tensor | None) -> None:
        self.draws += 1 if active is None else active.to(self.device, torch.int64)

    def _masked(self, out: torch.Tensor, active: torch.Tensor | None) -> torch.Tensor:
        if active is None:
            return out
        return torch.where(active.to(self.device).view((-1,) + (1,) * (out.dim() - 1)), out, torch.zeros_like(out))

    def permutations(self, n: int) -> torch.Tensor:
        out = []
        for rows in self._blocks(2 * n, None):
            w = self._words("permutation", 2 * n, rows).view(-1, n, 2)
            keys = (w[..., 0] << 31) | (w[..., 1] >> 1)  # 63 bits, non-negative
            out.append(torch.argsort(keys, dim=1, stable=True))
        self._advance(None)
        return torch.cat(out)

    def normal(self, shape: Sequence[int], samples: Sequence[int] | None = None, axis: int = -2,
               active: torch.Tensor | None = None) -> torch.Tensor:
        """Model m's array, of ``samples[m]`` entries along ``axis`` if given, is the start of its
        own sequence of normals, laid out in its own shape; padded with zeros to ``shape``."""
        shape = tuple(shape)
        size = math.prod(shape)
        if samples is not None:
            axis = axis % len(shape)
            own = torch.as_tensor([int(x) for x in samples], device=self.device).view((-1,) + (1,) * len(shape))
            position = torch.arange(shape[axis], device=self.device).view((1,) * (axis + 1) + (-1,) + (1,) * (len(shape) - axis - 1))
            index = torch.arange(size, device=self.device).view(1, *shape)
            inner = math.prod(shape[axis + 1:])
            base = index // (inner * shape[axis]) * inner, index % inner, inner
        out = []
        for rows in self._blocks(size + size % 2, active):
            w = self._words("normal", size + size % 2, rows).view(rows.stop - rows.start, -1, 2)  # a normal per word
            radius = torch.sqrt(-2.0 * torch.log((w[..., 0].to(torch.float64) + 1.0) / 2.0 ** 32))  # u1 in (0, 1]
            angle = (2 * math.pi / 2.0 ** 32) * w[..., 1].to(torch.float64)
            flat = torch.stack([radius * torch.cos(angle), radius * torch.sin(angle)], -1).flatten(1).to(torch.float32)
            if samples is None:
                out.append(flat[:, :size].view(-1, *shape))
                continue
            own_index = (base[0] * own[rows] + position * base[2]) + base[1]  # the element's place in the model's own array
            valid = position < own[rows]
            drawn = flat.gather(1, torch.where(valid, own_index, 0).flatten(1)).view(-1, *shape)
            out.append(torch.where(valid, drawn, torch.zeros((), device=self.device)))
        self._advance(active)
        return self._masked(torch.cat(out), active)

    def randint(self, high: int, shape: Sequence[int], active: torch.Tensor | None = None) -> torch.Tensor:
        shape = tuple(shape)
        out = [((self._words("randint", math.prod(shape), rows) * int(high)) >> 32).view(-1, *shape)
               for rows in self._blocks(math.prod(shape), active)]
        self._advance(active)
        return self._masked(torch.cat(out), active)

    def state(self) -> torch.Tensor:
        return self.draws.clone()

    def load_state(self, state) -> None:
        if isinstance(state, list):
            raise TypeError("the checkpoint holds generator streams (training.streams: generator), not counters")
        self.draws.copy_(torch.as_tensor(state, device=self.device))


def make_streams(seeds: Sequence[int], device, kind: str = "auto"):
    """The training streams: ``generator`` (:class:`ModelStreams`, CPU generators, drawn per model),
    ``counter`` (:class:`CounterStreams`, on the device in one pass), or ``auto``: counter-based on
    an accelerator, generators on the CPU (where they are what every earlier result used)."""
    if kind == "auto":
        kind = "generator" if torch.device(device).type == "cpu" else "counter"
    if kind == "generator":
        return ModelStreams(seeds)
    if kind == "counter":
        return CounterStreams(seeds, device)
    raise ValueError(f"training.streams must be auto, generator or counter, not {kind!r}")
