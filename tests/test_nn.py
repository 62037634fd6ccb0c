"""The stacked building blocks: the shape-aware batched linear layer and the masked Adam."""

import pytest
import torch

from fmvae.nn.batched import batched_linear
from fmvae.train.optim import BatchedAdam


@pytest.mark.parametrize("fan_in,fan_out", [(2, 50), (50, 50), (50, 2), (1, 50), (50, 1), (3, 7)])
def test_batched_linear_matches_baddbmm_with_exact_gradients(fan_in, fan_out):
    g = torch.Generator().manual_seed(fan_in * 100 + fan_out)
    h, w, b = (torch.randn(*shape, generator=g, dtype=torch.double, requires_grad=True)
               for shape in [(4, 9, fan_in), (4, fan_in, fan_out), (4, 1, fan_out)])
    assert torch.allclose(batched_linear(h, w, b), torch.baddbmm(b, h, w))
    assert torch.autograd.gradcheck(batched_linear, (h, w, b))


def test_fused_adam_matches_elementwise_adam_and_leaves_inactive_models_alone():
    torch.manual_seed(0)
    start = torch.randn(5, 3, 4)
    fused_p, plain_p = (start.clone().requires_grad_(True) for _ in range(2))
    fused, plain = BatchedAdam([fused_p], 5, 1e-2, fused=True), BatchedAdam([plain_p], 5, 1e-2)
    for step in range(40):
        active = torch.ones(5, dtype=torch.bool)
        active[1] = step < 15  # model 1 stops (as a diverged model does)
        grad = torch.randn(5, 3, 4)
        fused_p.grad, plain_p.grad = grad.clone(), grad.clone()
        before = fused_p.detach()[1].clone()
        fused.step(active)
        plain.step(active)
        if not active[1]:
            assert torch.equal(fused_p.detach()[1], before)
    assert fused.steps.tolist() == [40, 15, 40, 40, 40]
    assert torch.allclose(fused_p, plain_p, atol=1e-5) and not torch.equal(fused_p, start)
    assert torch.allclose(fused.exp_avg_sq[0], plain.exp_avg_sq[0], rtol=1e-4)


def test_fused_adam_falls_back_when_active_models_have_different_step_counts():
    p = torch.zeros(2, 3, requires_grad=True)
    opt = BatchedAdam([p], 2, 0.1, fused=True)
    p.grad = torch.ones(2, 3)
    opt.step(torch.tensor([True, False]))
    opt.step(torch.tensor([True, True]))  # counts 2 and 1: the per-model bias correction
    # Adam's first step moves each coordinate by lr (bias-corrected), whatever the count
    assert p.detach()[1].tolist() == pytest.approx([-0.1] * 3, rel=1e-5) and p.detach()[0].tolist() == pytest.approx([-0.2] * 3, rel=1e-5)
