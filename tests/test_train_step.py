"""TrainStep semantics on a one-layer network, where every update can be computed by hand."""
import numpy as np
import pytest
from mindspore import Parameter, Tensor, nn

from svd.training.step import TrainStep, cosine_schedule


class Quadratic(nn.Cell):
    """loss = sum(w * x): the gradient is x itself."""

    def __init__(self):
        super().__init__()
        self.w = Parameter(Tensor(np.zeros(3, np.float32)), name="w")

    def construct(self, x):
        return (self.w * x).sum()


def make(accumulation_steps=1, clip_norm=0.0, loss_scale=1.0, dynamic=False, ema_decay=0.0):
    net = Quadratic()
    optimizer = nn.SGD([net.w], learning_rate=1.0)
    return net, TrainStep(net, optimizer, accumulation_steps, clip_norm, loss_scale, dynamic, 2.0, 2, ema_decay)


def test_accumulation_applies_the_mean_gradient_once():
    net, step = make(accumulation_steps=2, loss_scale=8.0)
    step(Tensor(np.array([1.0, 2.0, 3.0], np.float32)))
    np.testing.assert_array_equal(net.w.asnumpy(), 0.0)
    step(Tensor(np.array([3.0, 2.0, 1.0], np.float32)))
    np.testing.assert_allclose(net.w.asnumpy(), [-2.0, -2.0, -2.0])


def test_clipping_bounds_the_global_norm():
    net, step = make(clip_norm=1.0)
    step(Tensor(np.array([3.0, 0.0, 4.0], np.float32)))
    np.testing.assert_allclose(net.w.asnumpy(), [-0.6, 0.0, -0.8], rtol=1e-6)


def test_overflow_skips_the_update_and_halves_the_scale():
    net, step = make(loss_scale=4.0, dynamic=True)
    _, overflow, scale = step(Tensor(np.array([np.inf, 1.0, 1.0], np.float32)))
    assert bool(overflow.asnumpy()) and float(scale.asnumpy()) == 2.0
    np.testing.assert_array_equal(net.w.asnumpy(), 0.0)
    for _ in range(2):
        _, overflow, scale = step(Tensor(np.array([1.0, 1.0, 1.0], np.float32)))
    assert not bool(overflow.asnumpy()) and float(scale.asnumpy()) == 4.0  # doubled after 2 clean steps
    np.testing.assert_allclose(net.w.asnumpy(), [-2.0, -2.0, -2.0])


def test_ema_tracks_the_weights():
    net, step = make(ema_decay=0.5)
    step(Tensor(np.array([2.0, 2.0, 2.0], np.float32)))
    step(Tensor(np.array([2.0, 2.0, 2.0], np.float32)))
    np.testing.assert_allclose(net.w.asnumpy(), -4.0)
    np.testing.assert_allclose(step.ema[0].asnumpy(), 0.5 * (0.5 * -2.0) + 0.5 * -4.0)


def test_cosine_schedule():
    rates = cosine_schedule(1.0, 0.0, 2, 6)
    assert rates[:2] == [0.5, 1.0]
    assert rates[2] == pytest.approx(1.0) and rates[-1] == pytest.approx(0.1464466, rel=1e-5)
    assert all(a >= b for a, b in zip(rates[1:], rates[2:]))
