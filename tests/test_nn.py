"""The stacked building blocks: the batched MLP (hand-written backward pass) and the masked Adam."""

import pytest
import torch

from fmvae.nn.batched import BatchedMLP
from fmvae.train.optim import BatchedAdam


def reference_mlp(net: BatchedMLP, x: torch.Tensor) -> torch.Tensor:
    """The same stack through autograd's own baddbmm and leaky ReLU."""
    h = x
    for i, (w, b) in enumerate(zip(net.weights, net.biases)):
        h = torch.baddbmm(b, h, w)
        if i < len(net.weights) - 1:
            h = torch.nn.functional.leaky_relu(h, net.negative_slope)
    return h


@pytest.mark.parametrize("sizes,slope", [([2, 50, 50, 2], 0.01), ([1, 9, 12, 50, 1], 0.2), ([3, 7], 0.01),
                                         ([2, 8, 8, 2], 0.0), ([5, 50, 4], 0.01)])
def test_batched_mlp_matches_autograd_reference_in_values_and_gradients(sizes, slope):
    """Thin layers (into 1 or 2) take the transposed products, outer products the broadcast;
    float64 gradcheck, and float32 against the reference."""
    net = BatchedMLP(3, sizes, slope, seeds=[1, 2, 3]).double()
    x = torch.randn(3, 11, sizes[0], dtype=torch.double, generator=torch.Generator().manual_seed(len(sizes)),
                    requires_grad=True)
    assert torch.allclose(net(x), reference_mlp(net, x))
    params = list(net.parameters())
    assert torch.autograd.gradcheck(lambda x, *p: torch.func.functional_call(
        net, {n: t for (n, _), t in zip(net.named_parameters(), p)}, (x,)), (x, *params))

    net32 = net.float()
    x32 = x.detach().float().requires_grad_(True)
    target = torch.randn(3, 11, sizes[-1])
    grads = []
    for forward in (net32, lambda x: reference_mlp(net32, x)):
        loss = ((forward(x32) - target) ** 2).sum()
        grads.append(torch.autograd.grad(loss, [x32, *net32.parameters()]))
    for ours, theirs in zip(*grads):
        assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-5)


def test_batched_mlp_skips_gradients_nobody_needs():
    net = BatchedMLP(2, [2, 10, 10, 1], seeds=[0, 1])
    for p in net.weights[:2]:
        p.requires_grad_(False)
    net(torch.randn(2, 5, 2)).sum().backward()
    assert net.weights[0].grad is None and net.weights[1].grad is None
    assert net.weights[2].grad is not None and net.biases[0].grad is not None
    with pytest.raises(ValueError, match="negative_slope"):
        BatchedMLP(1, [2, 3], negative_slope=-0.1)


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


def test_models_with_their_own_step_counts_need_the_elementwise_adam():
    """A model that comes back after missing steps has its own bias correction: the elementwise form
    applies it, and a fused optimiser (whose models share one count) reports the broken premise."""
    p = torch.zeros(2, 3, requires_grad=True)
    opt = BatchedAdam([p], 2, 0.1, fused=False)
    p.grad = torch.ones(2, 3)
    opt.step(torch.tensor([True, False]))
    opt.step(torch.tensor([True, True]))  # counts 2 and 1: the per-model bias correction
    # Adam's first step moves each coordinate by lr (bias-corrected), whatever the count
    assert p.detach()[1].tolist() == pytest.approx([-0.1] * 3, rel=1e-5) and p.detach()[0].tolist() == pytest.approx([-0.2] * 3, rel=1e-5)
    q = torch.zeros(2, 3, requires_grad=True)
    fused = BatchedAdam([q], 2, 0.1, fused=True)
    q.grad = torch.ones(2, 3)
    fused.step(torch.tensor([True, False]))
    fused.check_lockstep()  # a model that left: still lockstep
    fused.step(torch.tensor([True, True]))
    with pytest.raises(RuntimeError, match="lockstep"):
        fused.check_lockstep()
