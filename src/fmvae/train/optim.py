"""Adam for stacked models, with a per-model step mask.

Each parameter's first axis indexes the model. A model whose mask entry is False in a step keeps
its parameters *and* its optimiser state unchanged, and its own step count (for the bias
correction) does not advance: this is what lets LIN's per-model inner loops, and models marked as
diverged, share one stack without per-model Python branches.

With ``fused=True`` a step runs PyTorch's fused Adam kernel (one pass over each tensor, about 4x
faster than the elementwise form below on 100 models), for optimisers whose models step in
lockstep: every model that is active in a step has been active in every step before it, as in the
standard schedule, where a model leaves only by diverging, for good. The active models then share
one step count, ``taken``, kept on the host, and the kernel updates every model; the parameters
and moments of the inactive ones are put back (``_fused_step``). On an accelerator the step reads
nothing back from the device: no host synchronisation per step, which would stall the queue of
kernels behind it. :meth:`check_lockstep` (once per epoch) confirms the premise. Per-model step
counts that differ (LIN's encoder) need the per-model bias correction of the elementwise form, so
the trainer only fuses optimisers whose models step together: a model's arithmetic then never
depends on which other models share its stack.
"""

from __future__ import annotations

import torch
from torch.optim.adam import adam as _functional_adam


class BatchedAdam:
    def __init__(self, params, n_models: int, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
                 fused: bool = False):
        self.params = [p for p in params]
        self.lr, (self.beta1, self.beta2), self.eps, self.fused = lr, betas, eps, fused
        device = self.params[0].device if self.params else "cpu"
        self.steps = torch.zeros(n_models, device=device)
        self.taken = 0  # steps taken by every model active throughout (the fused path's shared count)
        self.off_step = torch.zeros((), dtype=torch.bool, device=device)  # fused: an active model off `taken`
        self.sync_free = torch.device(device).type != "cpu"  # fused: restore inactive models without a read
        self.exp_avg = [torch.zeros_like(p) for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p) for p in self.params]

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, active: torch.Tensor) -> None:
        """One Adam step for the models where ``active`` (M,) is True."""
        if not self.params:
            return
        if self.fused and all(p.grad is not None for p in self.params):
            self._fused_step(active)
            return
        self.taken += 1
        self.steps += active.to(self.steps.dtype)
        t = self.steps.clamp(min=1)
        bias1 = 1 - self.beta1 ** t
        bias2 = 1 - self.beta2 ** t
        every = bool(active.all())
        for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq):
            if p.grad is None:
                continue
            shape = (-1,) + (1,) * (p.dim() - 1)
            g = p.grad
            if every:
                m.lerp_(g, 1 - self.beta1)
                v.mul_(self.beta2).addcmul_(g, g, value=1 - self.beta2)
            else:
                mask = active.view(shape)
                g = torch.where(mask, g, torch.zeros_like(g))
                m.copy_(torch.where(mask, m.lerp(g, 1 - self.beta1), m))
                v.copy_(torch.where(mask, v * self.beta2 + (1 - self.beta2) * g * g, v))
            denom = (v / bias2.view(shape)).sqrt_().add_(self.eps)
            update = m / bias1.view(shape) / denom * self.lr
            if not every:
                update = torch.where(active.view(shape), update, torch.zeros_like(update))
            p.sub_(update)

    def _fused_step(self, active: torch.Tensor) -> None:
        """The fused kernel on every model at the shared count ``taken``, then the inactive models'
        parameters and moments put back: with ``torch.where`` on an accelerator (nothing read from
        the device), by index on the CPU, where reading is free and a stack with every model
        active, the usual case, needs no copies (``where`` on every step made a 10-model VAE 25%
        slower there). Both give the same bits."""
        self.off_step |= (active & (self.steps != self.taken)).any()
        state = (*self.params, *self.exp_avg, *self.exp_avg_sq)
        if self.sync_free:
            saved = [t.clone() for t in state]
        else:
            inactive = (~active).nonzero().flatten()
            saved = [t[inactive] for t in state] if len(inactive) else []  # indexing copies
        count = torch.tensor(float(self.taken), device=self.steps.device)
        state_steps = [count.clone() for _ in self.params]  # the kernel advances these
        _functional_adam(self.params, [p.grad for p in self.params], self.exp_avg, self.exp_avg_sq, [], state_steps,
                         fused=True, amsgrad=False, beta1=self.beta1, beta2=self.beta2, lr=self.lr,
                         weight_decay=0.0, eps=self.eps, maximize=False)
        for tensor, kept in zip(state, saved):
            if self.sync_free:
                tensor.copy_(torch.where(active.view((-1,) + (1,) * (tensor.dim() - 1)), tensor, kept))
            else:
                tensor[inactive] = kept
        self.steps += active.to(self.steps.dtype)
        self.taken += 1

    def check_lockstep(self) -> None:
        """Raise if a fused step ever found an active model whose own count was not the shared one
        (a model that came back after leaving): the fused path's premise. One read from the device."""
        if bool(self.off_step):
            raise RuntimeError("fused BatchedAdam: an active model had missed steps; models of a fused "
                               "optimiser must step in lockstep (use fused=False for per-model counts)")

    def state(self) -> dict:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state(self, state: dict) -> None:
        self.steps.copy_(state["steps"])
        self.taken = int(self.steps.max()) if len(self.steps) else 0
        for mine, theirs in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(theirs)
