"""Per-model random streams (fmvae.train.streams): the counter-based generator against Philox's
published known-answer vectors, its normals, permutations and integers, and the guarantees the
trainer relies on: a model's numbers do not depend on its stack companions (nor on their number
of samples or whether they are active), and a saved state continues exactly."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from conftest import TEST_DEVICE
from fmvae.train.streams import CounterStreams, ModelStreams, make_streams, philox4x32

# Random123's kat_vectors for philox4x32_R(10): counter, key -> output
KNOWN_ANSWERS = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize(("counter", "key", "expected"), KNOWN_ANSWERS)
def test_philox_matches_the_published_known_answers(counter, key, expected):
    out = philox4x32(tuple(torch.tensor([c]) for c in counter), tuple(torch.tensor([k]) for k in key))
    assert tuple(int(w) for w in out) == expected


def test_counter_normals_are_standard_normal_and_differ_between_models():
    streams = CounterStreams([3, 4])
    draws = streams.normal((200_000,))
    for row in draws.double():
        assert abs(float(row.mean())) < 0.01 and abs(float(row.var()) - 1) < 0.01
        assert stats.kstest(row.numpy(), "norm").pvalue > 1e-3
        assert abs(float(torch.corrcoef(torch.stack([row[:-1], row[1:]]))[0, 1])) < 0.01
    assert abs(float(torch.corrcoef(draws.double())[0, 1])) < 0.01
    assert not torch.equal(streams.normal((10,)), streams.normal((10,)))  # the draw counter moves on


def test_counter_permutations_and_integers_are_valid_and_uniform():
    streams = CounterStreams([1, 2, 3])
    perms = streams.permutations(1000)
    assert torch.equal(perms.sort(1).values, torch.arange(1000).expand(3, -1))
    assert not torch.equal(perms[0], perms[1])
    ints = streams.randint(7, (70_000,))
    assert ints.min() == 0 and ints.max() == 6
    counts = torch.bincount(ints[0], minlength=7).numpy()
    assert stats.chisquare(counts).pvalue > 1e-3
    # the first position of many permutations is uniform too
    first = torch.cat([CounterStreams(range(s, s + 50)).permutations(5)[:, 0] for s in range(0, 2000, 50)])
    assert stats.chisquare(torch.bincount(first, minlength=5).numpy()).pvalue > 1e-3


@pytest.mark.parametrize("kind", [ModelStreams, CounterStreams])
def test_a_models_numbers_do_not_depend_on_its_companions(kind):
    """Model 5 alone, and beside companions with other seeds, more samples and inactive draws."""
    alone, stacked = kind([5]), kind([9, 5, 7])
    a = alone.normal((4, 3, 2, 1), samples=[2], axis=-2)
    b = stacked.normal((4, 3, 6, 1), samples=[6, 2, 4], axis=-2)
    assert torch.equal(a[0], b[1, :, :, :2]) and (b[1, :, :, 2:] == 0).all()
    assert torch.equal(alone.permutations(50)[0], stacked.permutations(50)[1])
    skip = torch.tensor([True, False, True])  # model 5 sits out one draw: its stream does not move
    assert (stacked.randint(100, (8,), active=skip)[1] == 0).all()
    assert (stacked.normal((8,), active=skip)[1] == 0).all()
    assert torch.equal(alone.randint(100, (8,))[0], stacked.randint(100, (8,))[1])
    assert torch.equal(alone.normal((8,))[0], stacked.normal((8,))[1])


@pytest.mark.parametrize("kind", [ModelStreams, CounterStreams])
def test_a_saved_stream_state_continues_exactly(kind):
    streams = kind([1, 2])
    streams.normal((5,))
    state = streams.state()
    expected = (streams.permutations(20), streams.normal((3, 2)), streams.randint(9, (4,)))
    restored = kind([1, 2])
    restored.load_state(state)
    for want, got in zip(expected, (restored.permutations(20), restored.normal((3, 2)), restored.randint(9, (4,)))):
        assert torch.equal(want, got)


def test_make_streams_picks_generators_on_the_cpu_and_refuses_other_kinds():
    assert isinstance(make_streams([1], "cpu"), ModelStreams)
    assert isinstance(make_streams([1], "cpu", "counter"), CounterStreams)
    with pytest.raises(ValueError, match="training.streams"):
        make_streams([1], "cpu", "philox")
    with pytest.raises(TypeError, match="generator streams"):
        CounterStreams([1]).load_state(ModelStreams([1]).state())
    assert np.isfinite(CounterStreams([2**40 + 3]).normal((4,)).numpy()).all()  # a seed above 32 bits


def test_counter_streams_give_the_same_numbers_in_blocks_of_models():
    whole, blocked = CounterStreams(range(7)), CounterStreams(range(7))
    blocked.CHUNK_WORDS = 50  # one or two models per block
    active = torch.tensor([True, False, True, True, False, True, True])
    for draw in (lambda s: s.normal((3, 4, 5, 1), samples=[5, 2, 4, 1, 5, 3, 5], active=active),
                 lambda s: s.permutations(30), lambda s: s.randint(11, (40,), active=active)):
        assert torch.equal(draw(whole), draw(blocked))


@pytest.mark.gpu  # benchmarks/gpu_check.sh: the device gives the CPU's bits
def test_counter_streams_give_the_same_numbers_on_every_device():
    here, there = CounterStreams([4, 8, 15]), CounterStreams([4, 8, 15], TEST_DEVICE)
    assert torch.equal(here.permutations(100), there.permutations(100).cpu())
    assert torch.equal(here.randint(1000, (64,)), there.randint(1000, (64,)).cpu())
    # float64 Box–Muller rounds alike up to the last bits of log and cos
    assert torch.allclose(here.normal((8, 3, 1), samples=[3, 1, 2]), there.normal((8, 3, 1), samples=[3, 1, 2]).cpu(),
                          rtol=0, atol=1e-6)
