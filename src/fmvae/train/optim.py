"""Adam for stacked models, with a per-model step mask.

Each parameter's first axis indexes the model. A model whose mask entry is False in a step keeps
its parameters *and* its optimiser state unchanged, and its own step count (for the bias
correction) does not advance: this is what lets LIN's per-model inner loops, and models marked as
diverged, share one stack without per-model Python branches.

With ``fused=True`` a step runs PyTorch's fused Adam kernel (one pass over each tensor, about 4x
faster than the elementwise form below on 100 models) whenever every active model has taken the
same number of steps, which is always the case for the standard schedule; the parameters and
moments of inactive models are put back afterwards. Per-model step counts that differ (LIN's
encoder) need the per-model bias correction of the elementwise form, so the trainer only fuses
optimisers whose models step together: a model's arithmetic then never depends on which other
models share its stack.
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
        if self.fused and self._fused_step(active):
            return
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

    def _fused_step(self, active: torch.Tensor) -> bool:
        """The fused kernel, if the active models share one step count and every parameter has a
        gradient (else the elementwise form, which skips parameters without one); False if not."""
        counts = self.steps[active]
        if len(counts) == 0:
            return True
        if bool(counts.min() != counts.max()) or any(p.grad is None for p in self.params):
            return False
        state = (*self.params, *self.exp_avg, *self.exp_avg_sq)
        inactive = (~active).nonzero().flatten()
        saved = [t[inactive] for t in state] if len(inactive) else []  # indexing copies
        state_steps = [counts[0].clone() for _ in self.params]  # the kernel advances these
        _functional_adam(self.params, [p.grad for p in self.params], self.exp_avg, self.exp_avg_sq, [], state_steps,
                         fused=True, amsgrad=False, beta1=self.beta1, beta2=self.beta2, lr=self.lr,
                         weight_decay=0.0, eps=self.eps, maximize=False)
        for tensor, kept in zip(state, saved):
            tensor[inactive] = kept
        self.steps += active.to(self.steps.dtype)
        return True

    def state(self) -> dict:
        return {"steps": self.steps, "exp_avg": self.exp_avg, "exp_avg_sq": self.exp_avg_sq}

    def load_state(self, state: dict) -> None:
        self.steps.copy_(state["steps"])
        for mine, theirs in zip(self.exp_avg + self.exp_avg_sq, state["exp_avg"] + state["exp_avg_sq"]):
            mine.copy_(theirs)
