"""OpenCLIP ViT image tower (ViT-H/14 in SVD) and its preprocessing.

Names follow open_clip's ``visual`` module, the layout of Stability's checkpoint.
"""
import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops
from mindspore.common.initializer import Normal, Zero, initializer

from svd.models.attention import scaled_dot_product_attention
from svd.models.layers import LayerNorm, erf_gelu_is_fast, gelu, uniform_parameter
from svd.models.resize import antialias_resize_matrix

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class MultiheadAttention(nn.Cell):
    """Self-attention with a fused q/k/v input projection, as stored by open_clip."""

    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = uniform_parameter((3 * width, width), width, "in_proj_weight")
        self.in_proj_bias = Parameter(initializer(Zero(), (3 * width,), ms.float32), name="in_proj_bias")
        self.out_proj = nn.Dense(width, width)

    def construct(self, x):
        qkv = ops.dense(x, self.in_proj_weight.astype(x.dtype), self.in_proj_bias.astype(x.dtype))
        q, k, v = ops.chunk(qkv, 3, axis=-1)
        return self.out_proj(scaled_dot_product_attention(q, k, v, self.heads))


class MLP(nn.Cell):
    """Two-layer MLP with exact GELU."""

    def __init__(self, width, hidden):
        super().__init__()
        self.c_fc = nn.Dense(width, hidden)
        self.c_proj = nn.Dense(hidden, width)
        self.gelu_kernel = erf_gelu_is_fast()

    def construct(self, x):
        return self.c_proj(gelu(self.c_fc(x), self.gelu_kernel))


class ResidualAttentionBlock(nn.Cell):
    """Pre-norm transformer block."""

    def __init__(self, width, heads, mlp_ratio):
        super().__init__()
        self.ln_1 = LayerNorm(width)
        self.attn = MultiheadAttention(width, heads)
        self.ln_2 = LayerNorm(width)
        self.mlp = MLP(width, int(width * mlp_ratio))

    def construct(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Cell):
    """Stack of residual attention blocks."""

    def __init__(self, width, layers, heads, mlp_ratio):
        super().__init__()
        self.resblocks = nn.CellList([ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)])

    def construct(self, x):
        for block in self.resblocks:
            x = block(x)
        return x


class VisionTransformer(nn.Cell):
    """ViT returning the projected, normalised class token: ``(b, output_dim)``."""

    def __init__(self, image_size, patch_size, width, layers, heads, mlp_ratio, output_dim):
        super().__init__()
        grid = image_size // patch_size
        self.image_size = image_size
        self.patch_size = patch_size
        self.conv1 = nn.Conv2d(3, width, patch_size, stride=patch_size, pad_mode="valid", has_bias=False)
        scale = width ** -0.5
        self.class_embedding = Parameter(initializer(Normal(scale), (width,), ms.float32), name="class_embedding")
        self.positional_embedding = Parameter(initializer(Normal(scale), (grid * grid + 1, width), ms.float32),
                                              name="positional_embedding")
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, layers, heads, mlp_ratio)
        self.ln_post = LayerNorm(width)
        self.proj = Parameter(initializer(Normal(scale), (width, output_dim), ms.float32), name="proj")

    def construct(self, pixels):
        x = self.conv1(pixels)
        b, c = x.shape[0], x.shape[1]
        x = x.reshape(b, c, -1).transpose(0, 2, 1)
        cls = ops.broadcast_to(self.class_embedding.astype(x.dtype).reshape(1, 1, c), (b, 1, c))
        x = ops.cat((cls, x), axis=1) + self.positional_embedding.astype(x.dtype)
        x = self.transformer(self.ln_pre(x))
        return ops.matmul(self.ln_post(x[:, 0]), self.proj.astype(x.dtype))


def resize_operators(height, width, size):
    """Row and (transposed) column operators of the anti-aliased resize, as constant tensors."""
    return Tensor(antialias_resize_matrix(height, size)), Tensor(antialias_resize_matrix(width, size).T.copy())


def clip_preprocess(image, rows, cols):
    """``[-1, 1]`` images ``(b, 3, H, W)`` -> CLIP-normalised ``(b, 3, size, size)``, anti-aliased bicubic."""
    x = ops.matmul(ops.matmul(rows, image.astype(ms.float32)), cols)
    x = (x + 1.0) / 2.0
    mean = Tensor(np.array(CLIP_MEAN, np.float32).reshape(1, 3, 1, 1))
    std = Tensor(np.array(CLIP_STD, np.float32).reshape(1, 3, 1, 1))
    return (x - mean) / std
