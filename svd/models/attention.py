"""Multi-head attention and the transformer blocks of the spatial and temporal layers."""
import mindspore as ms
from mindspore import nn, ops

from svd.models.layers import LayerNorm, erf_gelu_is_fast, expand_to, gelu, not_before
from svd.models.memory import memory_budget, plan_attention_chunks, plan_row_chunk


def flash_attention_available():
    """Ascend has a fused attention kernel; other backends use the portable path."""
    return ms.get_context("device_target") == "Ascend"


def _scores(q, k, scale):
    """fp32 logits ``q k^T * scale`` of ``(B, n, d)`` and ``(B, m, d)``."""
    return ops.BatchMatMul(transpose_b=True)(q.astype(ms.float32) * scale, k.astype(ms.float32))


def _attend(q, k, v, scale):
    """Exact attention of one chunk: full softmax over all keys."""
    probs = ops.softmax(_scores(q, k, scale), axis=-1)
    return ops.BatchMatMul()(probs, v.astype(ms.float32)).astype(v.dtype)


def _attend_key_chunks(q, k, v, scale, key_chunk):
    """Exact attention with the keys in chunks, for rows too long for the budget.

    A first pass finds each row's maximum logit; the second sums the exponentials and the
    weighted values against that one maximum, so no partial result is ever rescaled and the
    rounding matches the unchunked softmax. The logits are computed twice: this path is only
    taken when a single row of scores does not fit.
    """
    starts = range(0, k.shape[1], key_chunk)
    row_max = None
    for start in starts:
        keys = k[:, start:start + key_chunk]
        if row_max is not None:  # one chunk's scores at a time in a compiled graph too
            keys = not_before(keys, row_max)
        chunk_max = _scores(q, keys, scale).max(axis=-1, keepdims=True)
        row_max = chunk_max if row_max is None else ops.maximum(row_max, chunk_max)
    out, total = None, None
    for start in starts:
        keys = not_before(k[:, start:start + key_chunk], row_max if out is None else out)
        weights = ops.exp(_scores(q, keys, scale) - row_max)
        chunk_out = ops.BatchMatMul()(weights, v[:, start:start + key_chunk].astype(ms.float32))
        chunk_sum = weights.sum(axis=-1, keepdims=True)
        out, total = (chunk_out, chunk_sum) if out is None else (out + chunk_out, total + chunk_sum)
    return (out / total).astype(v.dtype)


def _attend_chunked(q, k, v, scale, chunks):
    """Attention over ``(B, n, d)`` in (batch, query, key) chunks; every chunk is exact."""
    batch_chunk, query_chunk, key_chunk = chunks
    batch, queries, keys = q.shape[0], q.shape[1], k.shape[1]
    if batch_chunk >= batch and query_chunk >= queries and key_chunk >= keys:
        return _attend(q, k, v, scale)
    rows, last = [], None
    for b0 in range(0, batch, batch_chunk):
        kb, vb = k[b0:b0 + batch_chunk], v[b0:b0 + batch_chunk]
        parts = []
        for n0 in range(0, queries, query_chunk):
            qb = q[b0:b0 + batch_chunk, n0:n0 + query_chunk]
            if last is not None:  # one chunk's scores at a time in a compiled graph too
                qb = not_before(qb, last)
            last = (_attend(qb, kb, vb, scale) if key_chunk >= keys else
                    _attend_key_chunks(qb, kb, vb, scale, key_chunk))
            parts.append(last)
        rows.append(parts[0] if len(parts) == 1 else ops.cat(parts, axis=1))
    return rows[0] if len(rows) == 1 else ops.cat(rows, axis=0)


def scaled_dot_product_attention(q, k, v, heads, use_flash=False, budget=None):
    """Softmax attention over ``(B, N, heads*d)`` tensors; logits, softmax and weighting in fp32.

    ``use_flash`` selects Ascend's fused kernel for fp16/bf16 inputs. Elsewhere the
    attention runs in chunks whose scores fit ``budget`` bytes (default: the
    process-wide budget of svd.models.memory), so memory stays bounded at any resolution.
    """
    b, n, inner = q.shape
    m = k.shape[1]
    d = inner // heads
    scale = d ** -0.5
    if use_flash and q.dtype in (ms.float16, ms.bfloat16):
        return ops.flash_attention_score(q, k, v, heads, scalar_value=scale, input_layout="BSH")
    if heads > 1:
        q = q.reshape(b, n, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, n, d)
        k = k.reshape(b, m, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, m, d)
        v = v.reshape(b, m, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, m, d)
    chunks = plan_attention_chunks(b * heads, n, m, memory_budget() if budget is None else budget)
    out = _attend_chunked(q, k, v, scale, chunks)
    if heads > 1:
        out = out.reshape(b, heads, n, d).transpose(0, 2, 1, 3)
    return out.reshape(b, n, inner)


def check_window(window):
    """A temporal attention window: None (full attention) or an odd int >= 1; one-line error otherwise."""
    if window is None:
        return None
    if isinstance(window, bool) or not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"unet.temporal_attention_window must be null (full attention) or an odd number >= 1, "
                         f"got {window!r}")
    return window


def band_blocks(num_frames, window, block=None):
    """How local attention over ``num_frames`` frames is computed: ``[(q0, q1, k0, k1)]``, the queries
    ``q0:q1`` of one block and the only keys ``k0:k1`` any of them may see (``|i - j| <= window // 2``).

    A block holds ``window`` queries (``block`` overrides), so a block's scores have at most
    ``window + 2 * (window // 2)`` keys per query: the score memory grows with the window, not the length.
    """
    half = window // 2
    block = block or window
    blocks = []
    for q0 in range(0, num_frames, block):
        q1 = min(num_frames, q0 + block)
        blocks.append((q0, q1, max(0, q0 - half), min(num_frames, q1 + half)))
    return blocks


def _attend_band(q, k, v, scale, allowed):
    """Attention of one block whose ``(n, m)`` boolean ``allowed`` marks the visible keys of each query."""
    scores = _scores(q, k, scale)
    scores = ops.masked_fill(scores, ops.logical_not(allowed), float("-inf"))
    probs = ops.softmax(scores, axis=-1)
    return ops.BatchMatMul()(probs, v.astype(ms.float32)).astype(v.dtype)


def local_attention(q, k, v, heads, window, budget=None):
    """Self-attention over ``(B, T, heads*d)`` where position i sees only positions j with ``|i - j| <= window // 2``.

    A window covering all positions is full attention and takes the same path as
    scaled_dot_product_attention (identical result). Otherwise the queries run in blocks of ``window``
    (band_blocks), each against only the keys its band can reach, with a ``(block, keys)`` band mask
    (masked logits are -inf; the diagonal is always visible, so no row is empty). Scores never take the
    ``T x T`` shape, and each block is further split over the batch to fit the memory budget. Every
    shape is a Python constant of ``T`` and ``window``, so the same code compiles in graph mode.
    """
    b, t, inner = q.shape
    half = window // 2
    if half >= t - 1:
        return scaled_dot_product_attention(q, k, v, heads, budget=budget)
    d = inner // heads
    scale = d ** -0.5
    if heads > 1:
        q = q.reshape(b, t, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, t, d)
        k = k.reshape(b, t, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, t, d)
        v = v.reshape(b, t, heads, d).transpose(0, 2, 1, 3).reshape(b * heads, t, d)
    budget = memory_budget() if budget is None else budget
    batch = b * heads
    outs, last = [], None
    for q0, q1, k0, k1 in band_blocks(t, window):
        rows = ops.arange(q0, q1).reshape(-1, 1)
        cols = ops.arange(k0, k1).reshape(1, -1)
        allowed = ops.abs(rows - cols) <= half
        step = plan_attention_chunks(batch, q1 - q0, k1 - k0, budget)[0]
        parts = []
        for s in range(0, batch, step):
            qb = q[s:s + step, q0:q1]
            if last is not None:  # one block's scores at a time in a compiled graph too
                qb = not_before(qb, last)
            last = _attend_band(qb, k[s:s + step, k0:k1], v[s:s + step, k0:k1], scale, allowed)
            parts.append(last)
        outs.append(parts[0] if len(parts) == 1 else ops.cat(parts, axis=0))
    out = ops.cat(outs, axis=1)
    if heads > 1:
        out = out.reshape(b, heads, t, d).transpose(0, 2, 1, 3)
    return out.reshape(b, t, inner)


class Attention(nn.Cell):
    """Self- or cross-attention: q/k/v without bias, output projection with bias.

    ``cross`` marks a cross-attention: in SVD its context is one token, so to_q/to_k are never used (svd.models.lora).
    ``window`` (odd, self-attention only) restricts position i to positions j with ``|i - j| <= window // 2``
    (local_attention); None is full attention.
    """

    def __init__(self, query_dim, heads, dim_head, context_dim=None, window=None):
        super().__init__()
        self.window = check_window(window)
        inner = heads * dim_head
        self.cross = context_dim is not None
        context_dim = query_dim if context_dim is None else context_dim
        self.heads = heads
        self.use_flash = flash_attention_available()
        self.to_q = nn.Dense(query_dim, inner, has_bias=False)
        self.to_k = nn.Dense(context_dim, inner, has_bias=False)
        self.to_v = nn.Dense(context_dim, inner, has_bias=False)
        self.to_out = nn.SequentialCell([nn.Dense(inner, query_dim)])

    def construct(self, x, context=None):
        if context is None and self.window is not None:
            return self.to_out(local_attention(self.to_q(x), self.to_k(x), self.to_v(x), self.heads, self.window))
        if context is None:
            context = x
        if context.shape[1] == 1:
            out = self.single_token(context)
            return expand_to(out, (x.shape[0], x.shape[1], out.shape[-1]), after=x)
        return self.to_out(scaled_dot_product_attention(self.to_q(x), self.to_k(context), self.to_v(context),
                                                        self.heads, self.use_flash))

    def single_token(self, context):
        """The output for a one-token ``context`` ``(B, 1, D)``, one row per context: ``(B, 1, query_dim)``.

        The softmax over one key is exactly 1, so every query receives ``to_out(to_v(token))``
        whatever it is; computing it once per context row skips the queries' projections.
        """
        return self.to_out(self.to_v(context))


class GEGLU(nn.Cell):
    """Gated GELU (exact erf GELU on the gate half) of ``(rows, dim_in)`` inputs.

    The projection's halves come from two matmuls into two tensors: chunking one output along its
    last axis gives strided views, which MindSpore copies before each elementwise op (1 s of a
    2-frame 320x576 guided UNet call).
    """

    def __init__(self, dim_in, dim_out):
        super().__init__()
        self.proj = nn.Dense(dim_in, dim_out * 2)
        self.dim_out = dim_out
        self.matmul = ops.MatMul(transpose_b=True)
        self.gelu_kernel = erf_gelu_is_fast()

    def construct(self, x):
        weight, bias, half = not_before(self.proj.weight, x), self.proj.bias, self.dim_out
        hidden = ops.bias_add(self.matmul(x, weight[:half]), bias[:half])
        gate = ops.bias_add(self.matmul(x, weight[half:]), bias[half:])
        return hidden * gelu(gate, self.gelu_kernel)


class FeedForward(nn.Cell):
    """GEGLU MLP; index 1 is the dropout slot (p=0 in SVD) kept so names match ``net.2``.

    Rows (tokens) run in chunks within the memory budget, as diffusers' forward
    chunking: the 4x-wide hidden layer is the largest activation of a transformer block.
    """

    def __init__(self, dim, dim_out=None, mult=4):
        super().__init__()
        inner = dim * mult
        dim_out = dim_out or dim
        self.net = nn.SequentialCell([GEGLU(dim, inner), nn.Identity(), nn.Dense(inner, dim_out)])
        self.bytes_per_row = 4 * (4 * inner + dim_out)

    def construct(self, x):
        shape = x.shape
        rows = x.reshape(-1, shape[-1])
        step = plan_row_chunk(rows.shape[0], self.bytes_per_row, memory_budget())
        if step >= rows.shape[0]:
            out = self.net(rows)
        else:
            parts, last = [], None
            for i in range(0, rows.shape[0], step):
                chunk = rows[i:i + step]
                last = self.net(chunk if last is None else not_before(chunk, last))
                parts.append(last)
            out = ops.cat(parts, axis=0)
        return out.reshape(shape[:-1] + (-1,))


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
        x = self.cross_attend(x, context)
        return self.ff(self.norm3(x)) + x

    def cross_attend(self, x, context):
        """``x + attn2(norm2(x), context)``; ``context`` holds one row per group of consecutive rows of ``x``.

        With a one-token context (SVD's CLIP embedding) the attention output does not depend on the
        queries (Attention.single_token), so norm2 and the per-query work are skipped and the output of
        each context row is added to its group, exactly as the full computation would.
        """
        groups = context.shape[0]
        if context.shape[1] == 1:
            rows = x.reshape(groups, -1, x.shape[-1])
            return (rows + expand_to(self.attn2.single_token(context), rows.shape, after=x)).reshape(x.shape)
        if groups != x.shape[0]:
            context = ops.repeat_interleave(context, x.shape[0] // groups, 0)
        return self.attn2(self.norm2(x), context) + x


class VideoTransformerBlock(BasicTransformerBlock):
    """Temporal block: an extra residual MLP, then attention across the frames of each position.

    ``context`` is one row per video (its first frame's context), shared by all of its positions.
    ``window``: frame i's self-attention sees only frames j with ``|i - j| <= window // 2`` (None: all frames).
    """

    def __init__(self, dim, heads, dim_head, context_dim, window=None):
        super().__init__(dim, heads, dim_head, context_dim)
        self.attn1.window = check_window(window)
        self.norm_in = LayerNorm(dim)
        self.ff_in = FeedForward(dim, dim_out=dim)

    def construct(self, x, context, num_frames):
        bt, s, c = x.shape
        b = bt // num_frames
        x = x.reshape(b, num_frames, s, c).transpose(0, 2, 1, 3).reshape(b * s, num_frames, c)
        x = self.ff_in(self.norm_in(x)) + x
        x = self.attn1(self.norm1(x)) + x
        x = self.cross_attend(x, context)
        x = self.ff(self.norm3(x)) + x
        return x.reshape(b, s, num_frames, c).transpose(0, 2, 1, 3).reshape(bt, s, c)
