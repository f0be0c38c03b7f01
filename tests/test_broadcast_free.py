"""The broadcast-free forms used on hot paths equal the plain broadcasting computation exactly."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, ops

from svd.models.attention import GEGLU, BasicTransformerBlock, VideoTransformerBlock, scaled_dot_product_attention
from svd.models.layers import AlphaBlender, add_channel_bias, expand_to, gelu


@pytest.mark.parametrize("source, shape", [((3, 1, 5), (3, 7, 5)), ((4, 1), (4, 6)), ((1, 5), (3, 5)),
                                           ((2, 1, 3, 1), (2, 4, 3, 6)), ((5,), (2, 3, 5)), ((2, 3), (2, 3))])
def test_expand_to_equals_broadcast(source, shape):
    t = np.random.default_rng(0).standard_normal(source).astype(np.float32)
    ours = expand_to(Tensor(t), shape).asnumpy()
    assert ours.shape == shape
    np.testing.assert_array_equal(ours, np.broadcast_to(t, shape))


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (2, 3, 4, 2, 3), (2, 3, 1, 1)])
def test_add_channel_bias_equals_broadcast_add(shape):
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    bias = rng.standard_normal(shape[:3] if len(shape) == 5 else shape[:2]).astype(np.float32)
    expected = x + bias.reshape(bias.shape + (1,) * (x.ndim - bias.ndim))
    np.testing.assert_array_equal(add_channel_bias(Tensor(x), Tensor(bias)).asnumpy(), expected)
    grad = ms.grad(lambda a, b: add_channel_bias(a, b).sum(), grad_position=(0, 1))(Tensor(x), Tensor(bias))
    np.testing.assert_array_equal(grad[0].asnumpy(), np.ones_like(x))
    np.testing.assert_array_equal(grad[1].asnumpy(), np.full(bias.shape, x.size // bias.size, np.float32))


@pytest.mark.parametrize("rank", [3, 4])
def test_alpha_blender_per_frame(rank):
    rng = np.random.default_rng(2)
    shape = (6, 3, 4) if rank == 3 else (6, 3, 2, 4)
    spatial, temporal = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    indicator = np.array([[0, 1, 0], [1, 0, 0]], np.float32)  # two videos of three frames, two image frames
    blender = AlphaBlender(0.3, with_images=True)
    ours = blender(Tensor(spatial), Tensor(temporal), Tensor(indicator)).asnumpy()
    alpha = np.where(indicator > 0.5, 1.0, 1.0 / (1.0 + np.exp(-0.3))).reshape((6,) + (1,) * (rank - 1))
    np.testing.assert_allclose(ours, alpha * spatial + (1 - alpha) * temporal, rtol=0, atol=2e-6)  # float64
    np.testing.assert_array_equal(ours[[1, 3]], spatial[[1, 3]])  # image frames take the spatial branch only


def test_geglu_equals_chunked_projection():
    rng = np.random.default_rng(3)
    layer = GEGLU(8, 12)
    x = Tensor(rng.standard_normal((10, 8)).astype(np.float32))
    hidden, gate = ops.chunk(layer.proj(x), 2, axis=-1)
    np.testing.assert_allclose(layer(x).asnumpy(), (hidden * gelu(gate)).asnumpy(), rtol=0, atol=1e-6)


def full_cross_attention(block, x, context):
    """``x + attn2(norm2(x), context)`` computed by the attention function with every query."""
    attn = block.attn2
    h = block.norm2(x)
    return x + attn.to_out(scaled_dot_product_attention(attn.to_q(h), attn.to_k(context), attn.to_v(context),
                                                        attn.heads))


@pytest.mark.parametrize("tokens", [1, 3])
def test_cross_attend_equals_full_attention(tokens):
    rng = np.random.default_rng(4)
    block = BasicTransformerBlock(8, 2, 4, 6)
    x = Tensor(rng.standard_normal((4, 5, 8)).astype(np.float32))
    context = Tensor(rng.standard_normal((4, tokens, 6)).astype(np.float32))
    np.testing.assert_allclose(block.cross_attend(x, context).asnumpy(),
                               full_cross_attention(block, x, context).asnumpy(), rtol=0, atol=2e-6)


@pytest.mark.parametrize("tokens", [1, 3])
def test_temporal_cross_attend_shares_one_context_per_video(tokens):
    """A temporal block's rows are (video, position); each video's context serves all of its positions."""
    rng = np.random.default_rng(5)
    block = VideoTransformerBlock(8, 2, 4, 6)
    videos, positions, frames = 2, 3, 4
    x = Tensor(rng.standard_normal((videos * positions, frames, 8)).astype(np.float32))
    context = rng.standard_normal((videos, tokens, 6)).astype(np.float32)
    repeated = Tensor(np.repeat(context, positions, axis=0))
    np.testing.assert_allclose(block.cross_attend(x, Tensor(context)).asnumpy(),
                               full_cross_attention(block, x, repeated).asnumpy(), rtol=0, atol=2e-6)
