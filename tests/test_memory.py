"""Chunked attention and feed-forward are exact: any budget gives the unchunked result."""
import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor

from svd.models.attention import FeedForward, scaled_dot_product_attention
from svd.models.memory import MIB, SCORE_BYTES, memory_budget, plan_attention_chunks, plan_row_chunk, set_memory_budget

UNBOUNDED = 1 << 40


def float64_attention(q, k, v, heads):
    b, n, inner = q.shape
    d = inner // heads
    split = lambda x: x.astype(np.float64).reshape(b, -1, heads, d).transpose(0, 2, 1, 3)
    logits = split(q) @ split(k).transpose(0, 1, 3, 2) * d ** -0.5
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ split(v)).transpose(0, 2, 1, 3).reshape(b, n, inner)


@pytest.mark.parametrize("batch,queries,keys,budget", [
    (10, 7, 5, UNBOUNDED), (10, 7, 5, 7 * 5 * SCORE_BYTES * 3), (10, 7, 5, 5 * SCORE_BYTES * 3),
    (10, 7, 5, SCORE_BYTES * 2), (1, 9216, 9216, 512 * MIB), (50, 9216, 9216, 16 * MIB)])
def test_plan_fits_budget_and_covers_everything(batch, queries, keys, budget):
    b, q, k = plan_attention_chunks(batch, queries, keys, budget)
    assert 1 <= b <= batch and 1 <= q <= queries and 1 <= k <= keys
    assert b * q * k * SCORE_BYTES <= budget or (b, q, k) == (1, 1, 1)
    assert k == keys or (b, q) == (1, 1), "keys are only split when a single row does not fit"


def test_row_chunk():
    assert plan_row_chunk(100, 10, 1000) == 100
    assert plan_row_chunk(100, 10, 95) == 9
    assert plan_row_chunk(100, 10, 3) == 1


# Ragged chunks everywhere: 2 heads x 3 batch = 6 rows, 23 queries, 19 keys.
RAGGED_BUDGETS = {"batch chunks of 4": 4 * 23 * 19 * SCORE_BYTES, "query chunks of 5": 5 * 19 * SCORE_BYTES,
                  "key chunks of 7": 7 * SCORE_BYTES, "key chunks of 1": SCORE_BYTES}


@pytest.mark.parametrize("name", sorted(RAGGED_BUDGETS))
@pytest.mark.parametrize("dtype", [ms.float32, ms.float16])
def test_chunked_attention_equals_unchunked(name, dtype):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((3, n, 2 * 8)).astype(np.float32) * 2 for n in (23, 19, 19))
    args = [Tensor(a).astype(dtype) for a in (q, k, v)]
    budget = RAGGED_BUDGETS[name]
    assert plan_attention_chunks(6, 23, 19, budget) != (6, 23, 19)
    whole = scaled_dot_product_attention(*args, heads=2, budget=UNBOUNDED).astype(ms.float32).asnumpy()
    chunked = scaled_dot_product_attention(*args, heads=2, budget=budget).astype(ms.float32).asnumpy()
    exact = float64_attention(*(a.astype(ms.float32).asnumpy() for a in args), heads=2)
    if dtype == ms.float32:
        # 1e-6 of the output's scale: single-precision rounding of the two summation orders.
        assert np.abs(chunked - whole).max() <= 1e-6 * np.abs(whole).max()
        assert np.abs(chunked - exact).max() <= 1e-6 * np.abs(exact).max()
    else:
        # Both paths compute in fp32 and round once to fp16: they differ by at most one fp16 step
        # (or 1e-6 among fp16's subnormals), and rarely.
        ulp = np.spacing(np.maximum(np.abs(whole), np.abs(chunked)).astype(np.float16)).astype(np.float32)
        assert np.all(np.abs(chunked - whole) <= np.maximum(ulp, 1e-6))
        assert np.mean(chunked != whole) < 0.01
        assert np.abs(chunked - exact).max() <= 2e-3


class CompiledAttention(ms.nn.Cell):
    """The chunked attention inside a compiled graph, where its chunks are chained by not_before."""

    def __init__(self, budget):
        super().__init__()
        self.budget = budget

    @ms.jit
    def construct(self, q, k, v):
        return scaled_dot_product_attention(q, k, v, heads=2, budget=self.budget)


# "key chunks of 1" unrolls into a graph of ~40 chunks (a minute to compile); "of 7" takes the same path.
@pytest.mark.parametrize("name", sorted(set(RAGGED_BUDGETS) - {"key chunks of 1"}))
def test_chunked_attention_compiles_in_graph_mode(name):
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((3, n, 2 * 8)).astype(np.float32) * 2 for n in (23, 19, 19))
    compiled = CompiledAttention(RAGGED_BUDGETS[name])(Tensor(q), Tensor(k), Tensor(v)).asnumpy()
    exact = float64_attention(q, k, v, heads=2)
    assert np.abs(compiled - exact).max() <= 1e-6 * np.abs(exact).max()


def test_feed_forward_chunks_are_exact():
    rng = np.random.default_rng(4)
    ff = FeedForward(16, mult=4)
    x = Tensor(rng.standard_normal((3, 11, 16)).astype(np.float32))
    set_memory_budget(None)
    whole = ff(x).asnumpy()
    try:
        set_memory_budget(ff.bytes_per_row * 5 / MIB)  # 5 rows of 33: a ragged last chunk
        chunked = ff(x).asnumpy()
        compiled = ms.jit(ff.construct)(x).asnumpy()
    finally:
        set_memory_budget(None)
    assert whole.shape == (3, 11, 16)
    assert np.abs(chunked - whole).max() <= 1e-6
    assert np.abs(compiled - whole).max() <= 1e-6


def test_budget_validation_and_auto():
    set_memory_budget(None)
    assert 16 * MIB <= memory_budget() <= 512 * MIB
    set_memory_budget(64)
    assert memory_budget() == 64 * MIB
    set_memory_budget(None)
    for bad in (0, -1, "64", True):
        with pytest.raises(ValueError, match="positive number of MiB"):
            set_memory_budget(bad)


def test_tiny_model_unchanged_under_small_budget(tiny_model, tiny_model_cfg):
    """UNet and VAE decoder with every attention and feed-forward chunked equal the unchunked ones."""
    rng = np.random.default_rng(5)
    unet_cfg, b, t = tiny_model_cfg["unet"], 2, 3
    x = Tensor(rng.standard_normal((b * t, unet_cfg["in_channels"], 16, 16)).astype(np.float32))
    c_noise = Tensor(np.full((b * t,), 0.3, np.float32))
    context = Tensor(rng.standard_normal((b * t, 1, unet_cfg["context_dim"])).astype(np.float32))
    vector = Tensor(rng.standard_normal((b * t, unet_cfg["adm_in_channels"])).astype(np.float32))
    indicator = Tensor(np.zeros((b, t), np.float32))
    z = Tensor(rng.standard_normal((t, 4, 16, 16)).astype(np.float32))

    def run():
        return (tiny_model.unet(x, c_noise, context, vector, indicator).asnumpy(),
                tiny_model.vae.decoder(z, t).asnumpy())

    set_memory_budget(None)
    whole = run()
    try:
        set_memory_budget(0.01)  # ~10 kB: every attention and feed-forward runs in many chunks
        chunked = run()
    finally:
        set_memory_budget(None)
    for ours, ref in zip(chunked, whole):
        assert np.abs(ref).max() > 1e-2
        assert np.abs(ours - ref).max() <= 1e-5
