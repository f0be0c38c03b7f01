"""Multi-head attention and the transformer blocks of the spatial and temporal layers."""
import mindspore as ms
from mindspore import nn, ops

from svd.layers import LayerNorm


def flash_attention_available():
    """Ascend has a fused attention kernel; other backends use the portable path."""
    return ms.get_context("device_target") == "Ascend"


def scaled_dot_product_attention(q, k, v, heads, use_flash=False):
    """Softmax attention over ``(B, N, heads*d)`` tensors; logits and softmax in fp32.

    ``use_flash`` selects Ascend's fused kernel for fp16/bf16 inputs.
    """
    b, n, inner = q.shape
    m = k.shape[1]
    d = inner // heads
    scale = d ** -0.5
    if use_flash and q.dtype in (ms.float16, ms.bfloat16):
        return ops.flash_attention_score(q, k, v, heads, scalar_value=scale, input_layout="BSH")
    q = q.reshape(b, n, heads, d).transpose(0, 2, 1, 3)
    k = k.reshape(b, m, heads, d).transpose(0, 2, 3, 1)
    v = v.reshape(b, m, heads, d).transpose(0, 2, 1, 3)
    logits = ops.matmul(q.astype(ms.float32) * scale, k.astype(ms.float32))
    probs = ops.softmax(logits, axis=-1).astype(v.dtype)
    out = ops.matmul(probs, v)
    return out.transpose(0, 2, 1, 3).reshape(b, n, inner)


class Attention(nn.Cell):
    """Self- or cross-attention: q/k/v without bias, output projection with bias."""

    def __init__(self, query_dim, heads, dim_head, context_dim=None):
        super().__init__()
        inner = heads * dim_head
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.use_flash = flash_attention_available()
        self.to_q = nn.Dense(query_dim, inner, has_bias=False)
        self.to_k = nn.Dense(context_dim, inner, has_bias=False)
        self.to_v = nn.Dense(context_dim, inner, has_bias=False)
        self.to_out = nn.SequentialCell([nn.Dense(inner, query_dim)])

    def construct(self, x, context=None):
        if context is None:
            context = x
        if context.shape[1] == 1:
            # One key: softmax is exactly 1, so every query receives the projected value.
            out = ops.broadcast_to(self.to_v(context), (x.shape[0], x.shape[1], -1))
        else:
            out = scaled_dot_product_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads,
                                               self.use_flash)
        return self.to_out(out)


class GEGLU(nn.Cell):
    """Gated GELU (exact erf GELU on the gate half)."""

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Dense(dim_in, dim_out * 2)

    def construct(self, x):
        hidden, gate = ops.chunk(self.proj(x), 2, axis=-1)
        return hidden * ops.gelu(gate, approximate="none")


class FeedForward(nn.Cell):
    """GEGLU MLP; index 1 is the dropout slot (p=0 in SVD) kept so names match ``net.2``."""

    def __init__(self, dim, dim_out=None, mult=4):
        super().__init__()
        inner = dim * mult
        self.net = nn.SequentialCell([GEGLU(dim, inner), nn.Identity(), nn.Dense(inner, dim_out or dim)])

    def construct(self, x):
        return self.net(x)


class BasicTransformerBlock(nn.Cell):
    """Spatial block: self-attention, cross-attention to the CLIP token, GEGLU MLP."""

    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__()
        self.attn1 = Attention(dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, heads, dim_head, context_dim)
        self.norm1 = LayerNorm(dim)
        self.norm2 = LayerNorm(dim)
        self.norm3 = LayerNorm(dim)

    def construct(self, x, context):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class VideoTransformerBlock(BasicTransformerBlock):
    """Temporal block: an extra residual MLP, then attention across the frames of each position."""

    def __init__(self, dim, heads, dim_head, context_dim):
        super().__init__(dim, heads, dim_head, context_dim)
        self.norm_in = LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim_out=dim)

    def construct(self, x, context, num_frames):
        bt, s, c = x.shape
        b = bt // num_frames
        x = x.reshape(b, num_frames, s, c).transpose(0, 2, 1, 3).reshape(b * s, num_frames, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        x = self.ff(self.norm3(x)) + x
        return x.reshape(b, s, num_frames, c).transpose(0, 2, 1, 3).reshape(bt, s, c)
