"""The SVD autoencoder: a 2-D KL encoder and a decoder with temporal layers against flicker.

The ``*_image_decoder`` releases decode frame by frame instead: Stability's image AutoencoderKL, a
``post_quant_conv`` then a 2-D decoder (``temporal_decoder: false``).
Names follow Stability's checkpoint (``encoder.down.0.block.0.norm1`` ...).
"""
import mindspore as ms
from mindspore import Parameter, nn, ops
from mindspore.common.initializer import Constant, initializer

from svd.models.attention import scaled_dot_product_attention
from svd.models.layers import GroupNorm, TemporalConv, conv2d, silu, to_frames, to_video, upsample_nearest_2x
from svd.models.unet import ResBlock


class ResnetBlock(nn.Cell):
    """VAE ResnetBlock without a time embedding (GroupNorm eps 1e-6)."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.norm1 = GroupNorm(in_channels, eps=1e-6)
        self.conv1 = conv2d(in_channels, out_channels)
        self.norm2 = GroupNorm(out_channels, eps=1e-6)
        self.conv2 = conv2d(out_channels, out_channels)
        self.has_shortcut = in_channels != out_channels
        if self.has_shortcut:
            self.nin_shortcut = conv2d(in_channels, out_channels, 1)

    def _residual(self, x):
        h = self.conv1(silu(self.norm1(x)))
        h = self.conv2(silu(self.norm2(h)))
        return (self.nin_shortcut(x) if self.has_shortcut else x) + h

    def construct(self, x, num_frames):
        return self._residual(x)


class VideoResnetBlock(ResnetBlock):
    """Decoder block: 2-D ResnetBlock, then a temporal ResBlock blended in by sigmoid(mix_factor)."""

    def __init__(self, in_channels, out_channels, video_kernel_size, alpha=0.0):
        super().__init__(in_channels, out_channels)
        self.time_stack = ResBlock(out_channels, 0, out_channels, temporal_kernel=video_kernel_size, eps=1e-5)
        self.mix_factor = Parameter(initializer(Constant(alpha), (1,), ms.float32), name="mix_factor")

    def construct(self, x, num_frames):
        x = self._residual(x)
        return self.blend(x, to_frames(self.time_stack(to_video(x, num_frames), None)))

    def blend(self, x_spatial, x_temporal):
        """``a * spatial + (1 - a) * temporal`` with ``a = 1 - sigmoid(mix_factor)``, as diffusers computes it.

        ``a`` is a 0-d tensor: with a (1,)-shaped weight (or through lerp) MindSpore's CPU kernels take
        their broadcasting path, several times slower.
        """
        keep = (1.0 - ops.sigmoid(self.mix_factor)).reshape(()).astype(x_spatial.dtype)
        return x_spatial * keep + x_temporal * (1.0 - keep)


class AttnBlock(nn.Cell):
    """Single-head self-attention over all pixels with 1x1-conv projections."""

    def __init__(self, channels):
        super().__init__()
        self.norm = GroupNorm(channels, eps=1e-6)
        self.q = conv2d(channels, channels, 1)
        self.k = conv2d(channels, channels, 1)
        self.v = conv2d(channels, channels, 1)
        self.proj_out = conv2d(channels, channels, 1)

    def construct(self, x, num_frames):
        b, c, h, w = x.shape
        hn = self.norm(x)
        q, k, v = (conv(hn).reshape(b, c, h * w).transpose(0, 2, 1) for conv in (self.q, self.k, self.v))
        out = scaled_dot_product_attention(q, k, v, heads=1)
        return x + self.proj_out(out.transpose(0, 2, 1).reshape(b, c, h, w))


class Resample(nn.Cell):
    """Encoder downsample (stride-2 conv padded right/bottom only) or decoder upsample (nearest x2, conv).

    The asymmetric padding is the conv's own (top, bottom, left, right), not a separate pad op: the
    compiled backward of ops.pad hangs on MindSpore 2.10's CPU backend from its 26th call at 16x24.
    """

    def __init__(self, channels, down):
        super().__init__()
        self.down = down
        padding = (0, 1, 0, 1) if down else None
        self.conv = conv2d(channels, channels, 3, stride=2 if down else 1, padding=padding)

    def construct(self, x):
        if self.down:
            return self.conv(x)
        return self.conv(upsample_nearest_2x(x))


class Level(nn.Cell):
    """One resolution level: ResnetBlocks then an optional resample."""

    def __init__(self, blocks, resample=None):
        super().__init__()
        self.block = nn.CellList(blocks)
        self.has_down = resample is not None and resample.down
        self.has_up = resample is not None and not resample.down
        if self.has_down:
            self.downsample = resample
        if self.has_up:
            self.upsample = resample

    def construct(self, x, num_frames):
        for block in self.block:
            x = block(x, num_frames)
        if self.has_down:
            x = self.downsample(x)
        if self.has_up:
            x = self.upsample(x)
        return x


class MidBlock(nn.Cell):
    """ResnetBlock, attention, ResnetBlock at the lowest resolution."""

    def __init__(self, block_1, channels, block_2):
        super().__init__()
        self.block_1 = block_1
        self.attn_1 = AttnBlock(channels)
        self.block_2 = block_2

    def construct(self, x, num_frames):
        return self.block_2(self.attn_1(self.block_1(x, num_frames), num_frames), num_frames)


class Encoder(nn.Cell):
    """2-D encoder to the mean and log-variance of the latent posterior."""

    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, in_channels=3):
        super().__init__()
        self.conv_in = conv2d(in_channels, ch)
        levels = []
        block_in = ch
        for i, mult in enumerate(ch_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(block_in, ch * mult))
                block_in = ch * mult
            last = i == len(ch_mult) - 1
            levels.append(Level(blocks, None if last else Resample(block_in, down=True)))
        self.down = nn.CellList(levels)
        self.mid = MidBlock(ResnetBlock(block_in, block_in), block_in, ResnetBlock(block_in, block_in))
        self.norm_out = GroupNorm(block_in, eps=1e-6)
        self.conv_out = conv2d(block_in, 2 * z_channels)

    def construct(self, x):
        h = self.conv_in(x)
        for level in self.down:
            h = level(h, 1)
        h = self.mid(h, 1)
        return self.conv_out(silu(self.norm_out(h)))


class TimeMixConvOut(nn.Cell):
    """Final 3x3 conv followed by a temporal conv (Stability's AE3DConv)."""

    def __init__(self, in_channels, out_channels, video_kernel_size):
        super().__init__()
        conv = conv2d(in_channels, out_channels)
        self.weight = conv.weight
        self.bias = conv.bias
        self.time_mix_conv = TemporalConv(out_channels, out_channels, video_kernel_size)

    def spatial(self, x):
        """The 3x3 conv alone, frame-wise (the frame-by-frame decoder runs it per frame)."""
        return ops.conv2d(x, self.weight.astype(x.dtype), self.bias.astype(x.dtype), pad_mode="pad", padding=1)

    def construct(self, x, num_frames):
        return to_frames(self.time_mix_conv(to_video(self.spatial(x), num_frames)))


class Decoder(nn.Cell):
    """Decoder whose ResnetBlocks and output conv see the frames of one decode chunk (``temporal``),
    or a frame-wise 2-D decoder (the image-decoder releases)."""

    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, out_ch=3, video_kernel_size=(3, 1, 1), temporal=True):
        super().__init__()
        kernel = tuple(video_kernel_size)
        block = (lambda i, o: VideoResnetBlock(i, o, kernel)) if temporal else ResnetBlock
        block_in = ch * ch_mult[-1]
        self.conv_in = conv2d(z_channels, block_in)
        self.mid = MidBlock(block(block_in, block_in), block_in, block(block_in, block_in))
        levels = []
        for i in reversed(range(len(ch_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(block(block_in, ch * ch_mult[i]))
                block_in = ch * ch_mult[i]
            levels.insert(0, Level(blocks, Resample(block_in, down=False) if i else None))
        self.up = nn.CellList(levels)
        self.num_levels = len(ch_mult)
        self.norm_out = GroupNorm(block_in, eps=1e-6)
        self.temporal = temporal
        self.conv_out = TimeMixConvOut(block_in, out_ch, kernel) if temporal else conv2d(block_in, out_ch)

    def construct(self, z, num_frames):
        h = self.mid(self.conv_in(z), num_frames)
        for i in range(self.num_levels - 1, -1, -1):
            h = self.up[i](h, num_frames)
        h = silu(self.norm_out(h))
        if self.temporal:
            return self.conv_out(h, num_frames)
        return self.conv_out(h)


class AutoencoderKL(nn.Cell):
    """Encoder (+ quant_conv) to a diagonal Gaussian, temporal decoder back to pixels.

    ``temporal_decoder=False`` builds the image-decoder releases' first stage instead: ``post_quant_conv``
    and a frame-wise decoder. The encoder is the same in both (SVD conditions on it).
    """

    def __init__(self, ch, ch_mult, num_res_blocks, z_channels, embed_dim, in_channels=3, out_ch=3,
                 video_kernel_size=(3, 1, 1), temporal_decoder=True):
        super().__init__()
        self.encoder = Encoder(ch, ch_mult, num_res_blocks, z_channels, in_channels)
        self.quant_conv = conv2d(2 * z_channels, 2 * embed_dim, 1)
        self.temporal_decoder = temporal_decoder
        if not temporal_decoder:
            self.post_quant_conv = conv2d(embed_dim, z_channels, 1)
        self.decoder = Decoder(ch, ch_mult, num_res_blocks, embed_dim if temporal_decoder else z_channels, out_ch,
                               video_kernel_size, temporal_decoder)

    def encode_moments(self, x):
        """Mean and log-variance (clamped to [-30, 20]) of the posterior."""
        moments = self.quant_conv(self.encoder(x))
        mean, logvar = ops.chunk(moments, 2, axis=1)
        return mean, ops.clamp(logvar, -30.0, 20.0)

    def decoder_input(self, z):
        """What the decoder sees: ``post_quant_conv(z)`` for the image-decoder releases, ``z`` itself otherwise."""
        return z if self.temporal_decoder else self.post_quant_conv(z)

    def decode(self, z, num_frames):
        """Latents (unscaled) of ``num_frames`` consecutive frames to pixels."""
        return self.decoder(self.decoder_input(z), num_frames)

    def construct(self, z, num_frames):
        return self.decode(z, num_frames)
