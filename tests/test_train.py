"""The batched trainer: independence of the models in a stack, divergence isolation, LIN's
aggressive phase, and checkpoint resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import TEST_DEVICE
from fmvae import methods
from fmvae.data import groundtruth
from fmvae.nn import BatchedVAE
from fmvae.train.loop import Trainer

SETTINGS = {"epochs": 3, "batch_size": 50, "lr": 1e-3, "max_inner_steps": 20, "mi_patience": 1, "mi_points": 100,
            "log_every_epochs": 0}
SEEDS = [11, 12, 13]
pytestmark = pytest.mark.gpu  # benchmarks/gpu_check.sh runs these on the GPU


@pytest.fixture(scope="module")
def x():
    gt = groundtruth.get("figure8")
    rng = np.random.default_rng(0)
    z, _ = gt.sample_latents(rng, 500)
    return torch.tensor(gt.mean(z) + np.sqrt(0.02) * rng.standard_normal((500, 2)), dtype=torch.float32)


def _model(seeds, learn_sigma2=True):
    return BatchedVAE(len(seeds), 2, 1, [16, 16], 0.01, seeds=seeds, sigma2_init=torch.tensor(0.02),
                      learn_sigma2=learn_sigma2).to(TEST_DEVICE)


def _train(seeds, method, hyper, x, settings=SETTINGS, model=None, **kwargs):
    model = model or _model(seeds)
    trainer = Trainer(model, methods.get(method), hyper, settings, seeds=[s + 100 for s in seeds])
    return model, trainer, trainer.run(x[:400], x[400:], **kwargs)


GRIDS = {"vae": {}, "iwae": {"S": np.array([1, 3, 5])},
         "lin": {"T": np.array([0.05, 0.1, 0.05]), "R": np.array([2, 2, 4])}}


@pytest.mark.parametrize("streams", ["generator", "counter"])
@pytest.mark.parametrize("method", sorted(GRIDS))
def test_a_model_trains_the_same_alone_or_in_a_stack(method, streams, x):
    settings = {**SETTINGS, "streams": streams}
    stacked, _, _ = _train(SEEDS, method, GRIDS[method], x, settings=settings)
    together = stacked.state_arrays()
    for i, seed in enumerate(SEEDS):
        alone, _, _ = _train([seed], method, {k: v[i:i + 1] for k, v in GRIDS[method].items()}, x, settings=settings)
        for name, value in alone.state_arrays().items():
            assert torch.allclose(together[name][i], value[0], atol=1e-5), (method, i, name)
    # ...and the models really differ from one another (distinct seeds, distinct results).
    assert not torch.allclose(together["decoder/W0"][0], together["decoder/W0"][1])


def test_lin_steps_only_the_models_still_in_its_inner_loop(x, monkeypatch):
    """The inner loop runs on a stack shrunk to the models still in it (one slow model does not
    keep the whole stack stepping), and each model's training is still the one it has alone."""
    from fmvae.train import loop

    sizes, original = [], loop.substack

    def recording(model, optimizer, members):
        sizes.append((len(members), model.n_models))
        return original(model, optimizer, members)

    monkeypatch.setattr(loop, "substack", recording)
    stacked, trainer, _ = _train(SEEDS, "lin", GRIDS["lin"], x)
    assert any(n < m for n, m in sizes), sizes  # it did shrink
    assert stacked.n_models == len(SEEDS) and trainer.opt_encoder.steps.shape == (len(SEEDS),)
    monkeypatch.setattr(loop, "substack", original)
    together = stacked.state_arrays()
    for i, seed in enumerate(SEEDS):
        alone, _, _ = _train([seed], "lin", {k: v[i:i + 1] for k, v in GRIDS["lin"].items()}, x)
        for name, value in alone.state_arrays().items():
            assert torch.allclose(together[name][i], value[0], atol=1e-5), (i, name)


def test_a_model_diverging_in_a_shrunk_stack_is_marked_in_the_whole_stack(x):
    from fmvae.train.loop import substack

    model = _model(SEEDS)
    with torch.no_grad():
        model.decoder.biases[-1][1] = float("nan")
    trainer = Trainer(model, methods.get("lin"), GRIDS["lin"], SETTINGS, seeds=SEEDS)
    trainer.epoch = 2
    members = torch.tensor([1, 2], device=model.log_sigma2.device)
    xb = x[:50].to(model.log_sigma2.device).expand(2, -1, -1)
    with substack(model, trainer.opt_encoder, members):
        assert model.n_models == 2 and model.decoder.weights[0].shape[0] == 2
        eps = torch.randn(2, 50, 1, 1, device=xb.device)
        loss = trainer._loss(xb, eps, torch.ones(2, dtype=torch.bool, device=xb.device), members,
                             {k: v[members] for k, v in trainer.hyper.items()})
    assert trainer.diverged.tolist() == [False, True, False] and trainer.diverged_epoch.tolist() == [-1, 2, -1]
    assert loss[0] == 0 and torch.isfinite(loss[1]) and loss[1] != 0
    assert model.n_models == 3 and torch.isnan(model.decoder.biases[-1][1]).all()  # written back whole


@pytest.mark.parametrize("method", ["vae", "lin"])
def test_a_diverging_model_is_recorded_and_isolated(method, x):
    model = _model(SEEDS)
    with torch.no_grad():
        model.decoder.biases[-1][1] = float("nan")  # model 1 diverges at its first step
    stacked, _, result = _train(SEEDS, method, GRIDS[method], x, model=model)
    assert result.diverged.tolist() == [False, True, False]
    assert result.diverged_epoch.tolist() == [-1, 0, -1]
    assert np.isnan(result.curve[1]).all() and np.isfinite(result.curve[[0, 2]]).all()
    others, _, _ = _train([SEEDS[0], SEEDS[2]], method, {k: v[[0, 2]] for k, v in GRIDS[method].items()}, x)
    for name, value in others.state_arrays().items():
        assert torch.allclose(stacked.state_arrays()[name][[0, 2]], value, atol=1e-5), name


def test_lin_aggressive_phase_ends(x):
    settings = {**SETTINGS, "epochs": 30}
    _, trainer, result = _train(SEEDS, "lin", GRIDS["lin"], x, settings=settings)
    # Each model leaves at its own epoch (mi_patience = 1: the first epoch I_q fails to improve).
    assert not trainer.aggressive.any()
    assert (result.aggressive_epochs >= 2).all() and (result.aggressive_epochs < 30).all()


@pytest.mark.parametrize("streams", ["generator", "counter"])
def test_a_killed_job_resumes_from_its_checkpoint_to_the_same_result(streams, x, tmp_path, monkeypatch):
    settings = {**SETTINGS, "epochs": 4, "checkpoint_every_s": 0, "streams": streams}
    reference, _, _ = _train(SEEDS, "lin", GRIDS["lin"], x, settings=settings)
    checkpoint = tmp_path / "part0.h5.ckpt"
    original = Trainer._save

    def save_then_die(self, path):
        original(self, path)
        if self.epoch == 2:
            raise KeyboardInterrupt("killed after epoch 2")

    monkeypatch.setattr(Trainer, "_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _train(SEEDS, "lin", GRIDS["lin"], x, settings=settings, checkpoint=checkpoint)
    monkeypatch.setattr(Trainer, "_save", original)
    resumed, _, result = _train(SEEDS, "lin", GRIDS["lin"], x, settings=settings, checkpoint=checkpoint)
    for name, value in reference.state_arrays().items():
        assert torch.equal(resumed.state_arrays()[name], value), name
    assert np.isfinite(result.curve).all()


class _DeviceReads(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the operators that read a value back from the device (``.item()``, ``bool()``,
    boolean-mask indexing): on a GPU each one waits for every kernel queued before it."""

    READS = frozenset({torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
                       torch.ops.aten.masked_select.default, torch.ops.aten.equal.default})

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func in self.READS
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("method", ["vae", "iwae"])
def test_the_standard_step_reads_nothing_back_from_the_device(method, x):
    """With the optimisers' accelerator path (``sync_free``), the reads per epoch do not grow with
    the steps per epoch (8 against 2: none is made per step), and a stack with a model that
    diverges at its first step trains to the same bits as with the CPU's index path."""
    hyper = {k: v for k, v in GRIDS[method].items()}
    states = []
    for sync_free in (False, True):
        reads = []
        for n in (100, 400):  # 2 and 8 steps per epoch
            model = _model(SEEDS)
            with torch.no_grad():
                model.decoder.biases[-1][1] = float("nan")  # model 1 diverges at its first step
            trainer = Trainer(model, methods.get(method), hyper, SETTINGS, seeds=SEEDS)
            trainer.opt_encoder.sync_free = trainer.opt_decoder.sync_free = sync_free
            with _DeviceReads() as counter:
                result = trainer.run(x[:n], x[400:])
            reads.append(counter.count)
        assert result.diverged.tolist() == [False, True, False] and result.diverged_epoch.tolist() == [-1, 0, -1]
        if sync_free:
            assert reads[0] == reads[1], reads
        else:
            assert reads[1] > reads[0], reads  # the CPU path reads per step: the counter sees reads
        states.append(model.state_arrays())
    for name, value in states[0].items():
        assert torch.equal(torch.nan_to_num(value), torch.nan_to_num(states[1][name])), name
