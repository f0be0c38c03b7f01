"""VideoUNet: the SD UNet with temporal ResBlocks and temporal transformers.

All activations are ``(b t) c h w`` with the frames of one video contiguous.
The number of frames is read from ``image_only_indicator`` (shape ``(b, t)``),
which is also what lets image-only samples bypass the temporal layers.
Parameter names follow Stability's checkpoint (``input_blocks.1.0.in_layers.0`` ...).
"""
import mindspore as ms
from mindspore import nn, ops

from svd.models.attention import BasicTransformerBlock, VideoTransformerBlock, check_window
from svd.models.layers import (AlphaBlender, GroupNorm, SiLU, TemporalConv, add_channel_bias, conv2d, expand_to,
                               timestep_embedding, to_frames, to_video, uniform_parameter, upsample_nearest_2x)


class ResBlock(nn.Cell):
    """Pre-activation ResBlock with a time-embedding bias, 2-D or temporal (kernel k x 1 x 1).

    ``temporal_kernel`` switches to 5-D ``b c t h w`` inputs with a ``(b, t, emb)``
    embedding; ``emb_channels=0`` drops the embedding (the VAE decoder).
    """

    def __init__(self, channels, emb_channels, out_channels=None, temporal_kernel=None, eps=1e-5):
        super().__init__()
        out_channels = out_channels or channels
        self.temporal = temporal_kernel is not None
        self.use_emb = emb_channels > 0
        make_conv = (lambda i, o: TemporalConv(i, o, temporal_kernel)) if self.temporal else (lambda i, o: conv2d(i, o))
        self.in_layers = nn.SequentialCell([GroupNorm(channels, eps=eps), SiLU(), make_conv(channels, out_channels)])
        if self.use_emb:
            self.emb_layers = nn.SequentialCell([SiLU(), nn.Dense(emb_channels, out_channels)])
        self.out_layers = nn.SequentialCell([GroupNorm(out_channels, eps=eps), SiLU(), nn.Identity(),
                                             make_conv(out_channels, out_channels)])
        self.has_skip_conv = out_channels != channels
        if self.has_skip_conv:
            self.skip_connection = conv2d(channels, out_channels, 1)

    def _residual(self, x, emb):
        h = self.in_layers(x)
        if self.use_emb:
            e = self.emb_layers(emb).astype(h.dtype)
            if self.temporal:
                e = e.transpose(0, 2, 1)
            h = add_channel_bias(h, e)
        h = self.out_layers(h)
        skip = self.skip_connection(x) if self.has_skip_conv else x
        return skip + h

    def construct(self, x, emb):
        return self._residual(x, emb)


class VideoResBlock(ResBlock):
    """Spatial ResBlock, then a temporal ResBlock, merged by a learned blend."""

    def __init__(self, channels, emb_channels, out_channels, video_kernel_size, merge_factor):
        super().__init__(channels, emb_channels, out_channels)
        out_channels = out_channels or channels
        self.time_stack = ResBlock(out_channels, emb_channels, out_channels, temporal_kernel=video_kernel_size)
        self.time_mixer = AlphaBlender(merge_factor, with_images=True)

    def construct(self, x, emb, context, image_only_indicator):
        num_frames = image_only_indicator.shape[1]
        x = self._residual(x, emb)
        x_spatial = to_video(x, num_frames)
        x_temporal = self.time_stack(x_spatial, emb.reshape(-1, num_frames, emb.shape[-1]))
        return self.time_mixer(x, to_frames(x_temporal), image_only_indicator)


class SpatialVideoTransformer(nn.Cell):
    """Spatial transformer whose every block is followed by a temporal block and a learned blend."""

    def __init__(self, channels, heads, dim_head, context_dim, depth, merge_factor, max_time_period,
                 temporal_window=None):
        super().__init__()
        inner = heads * dim_head
        self.max_time_period = max_time_period
        self.norm = GroupNorm(channels, eps=1e-6)
        self.proj_in = nn.Dense(channels, inner)
        self.transformer_blocks = nn.CellList(
            [BasicTransformerBlock(inner, heads, dim_head, context_dim) for _ in range(depth)])
        self.proj_out = nn.Dense(inner, channels)
        self.time_stack = nn.CellList(
            [VideoTransformerBlock(inner, heads, dim_head, context_dim, temporal_window) for _ in range(depth)])
        self.time_pos_embed = nn.SequentialCell([nn.Dense(channels, channels * 4), SiLU(),
                                                 nn.Dense(channels * 4, channels)])
        self.time_mixer = AlphaBlender(merge_factor, with_images=True)
        self.channels = channels

    def construct(self, x, emb, context, image_only_indicator):
        bt, c, h, w = x.shape
        num_frames = image_only_indicator.shape[1]
        b = bt // num_frames
        first_frame_context = context.reshape(b, num_frames, context.shape[1], context.shape[2])[:, 0]
        x_in = x
        x = self.norm(x).reshape(bt, c, h * w).transpose(0, 2, 1)
        x = self.proj_in(x)
        frame_index = ops.tile(ops.arange(0, num_frames, dtype=ms.float32), (b,))
        frame_emb = self.time_pos_embed(timestep_embedding(frame_index, self.channels, self.max_time_period))
        frame_emb = frame_emb.astype(x.dtype).reshape(bt, 1, -1)
        for block, mix_block in zip(self.transformer_blocks, self.time_stack):
            x = block(x, context)
            x_mix = mix_block(x + expand_to(frame_emb, x.shape, after=x), first_frame_context, num_frames)
            x = self.time_mixer(x, x_mix, image_only_indicator)
        x = self.proj_out(x).transpose(0, 2, 1).reshape(bt, c, h, w)
        return x + x_in


class Downsample(nn.Cell):
    """Strided 3x3 convolution."""

    def __init__(self, channels):
        super().__init__()
        self.op = conv2d(channels, channels, 3, stride=2)

    def construct(self, x, emb, context, image_only_indicator):
        return self.op(x)


class Upsample(nn.Cell):
    """Nearest x2 then 3x3 convolution."""

    def __init__(self, channels):
        super().__init__()
        self.conv = conv2d(channels, channels, 3)

    def construct(self, x, emb, context, image_only_indicator):
        return self.conv(upsample_nearest_2x(x))


class ConvIn(nn.Cell):
    """The first 3x3 convolution, with the block-layer call signature."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        self.weight = uniform_parameter((out_channels, in_channels, 3, 3), in_channels * 9, "weight")
        self.bias = uniform_parameter((out_channels,), in_channels * 9, "bias")

    def construct(self, x, emb, context, image_only_indicator):
        return ops.conv2d(x, self.weight.astype(x.dtype), self.bias.astype(x.dtype), pad_mode="pad", padding=1)


class UNetBlock(nn.SequentialCell):
    """Ordered layers that all take ``(x, emb, context, image_only_indicator)``."""

    def construct(self, x, emb, context, image_only_indicator):
        for layer in self.cell_list:
            x = layer(x, emb, context, image_only_indicator)
        return x


class VideoUNet(nn.Cell):
    """Noise-conditioned video UNet of SVD; returns the raw network output F (v-prediction).

    ``temporal_attention_window`` (config ``unet.temporal_attention_window``; odd, None = full): every
    temporal transformer lets frame i attend only to frames j with ``|i - j| <= window // 2``, in sampling
    and training alike (svd.models.attention.local_attention).
    ``interpolation``: the keyframe-interpolation UNet (svd.models.interpolation): ``in_channels`` are the base
    model's, and the input convolution takes one more, the mask channel marking the known frames.
    """

    def __init__(self, in_channels, out_channels, model_channels, channel_mult, num_res_blocks,
                 attention_resolutions, num_head_channels, transformer_depth, context_dim, adm_in_channels,
                 video_kernel_size=(3, 1, 1), merge_factor=0.5, max_ddpm_temb_period=10000,
                 temporal_attention_window=None, interpolation=False):
        super().__init__()
        self.temporal_attention_window = check_window(temporal_attention_window)
        if not isinstance(interpolation, bool):
            raise ValueError(f"unet.interpolation must be true or false, got {interpolation!r}")
        self.interpolation = interpolation
        self.in_channels = in_channels + int(interpolation)
        self.model_channels = model_channels
        emb_dim = model_channels * 4
        self.time_embed = nn.SequentialCell([nn.Dense(model_channels, emb_dim), SiLU(), nn.Dense(emb_dim, emb_dim)])
        self.label_emb = nn.SequentialCell([nn.SequentialCell([nn.Dense(adm_in_channels, emb_dim), SiLU(),
                                                               nn.Dense(emb_dim, emb_dim)])])
        kernel = tuple(video_kernel_size)

        def resblock(ch_in, ch_out):
            return VideoResBlock(ch_in, emb_dim, ch_out, kernel, merge_factor)

        def transformer(ch):
            return SpatialVideoTransformer(ch, ch // num_head_channels, num_head_channels, context_dim,
                                           transformer_depth, merge_factor, max_ddpm_temb_period,
                                           self.temporal_attention_window)

        input_blocks = [UNetBlock([ConvIn(self.in_channels, model_channels)])]
        skip_channels = [model_channels]
        ch = model_channels
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [resblock(ch, mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                input_blocks.append(UNetBlock(layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                input_blocks.append(UNetBlock([Downsample(ch)]))
                skip_channels.append(ch)
                ds *= 2
        self.input_blocks = nn.CellList(input_blocks)
        self.middle_block = UNetBlock([resblock(ch, ch), transformer(ch), resblock(ch, ch)])
        output_blocks = []
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [resblock(ch + skip_channels.pop(), mult * model_channels)]
                ch = mult * model_channels
                if ds in attention_resolutions:
                    layers.append(transformer(ch))
                if level and i == num_res_blocks:
                    layers.append(Upsample(ch))
                    ds //= 2
                output_blocks.append(UNetBlock(layers))
        self.output_blocks = nn.CellList(output_blocks)
        self.out = nn.SequentialCell([GroupNorm(ch, eps=1e-5), SiLU(), conv2d(ch, out_channels, 3)])

    def construct(self, x, c_noise, context, y, image_only_indicator):
        """x ``(b t, in, h, w)``, c_noise ``(b t,)``, context ``(b t, n, d)``, y ``(b t, adm)``, indicator ``(b, t)``."""
        emb = self.time_embed(timestep_embedding(c_noise, self.model_channels).astype(x.dtype))
        emb = emb + self.label_emb(y.astype(x.dtype))
        skips = []
        h = x
        for block in self.input_blocks:
            h = block(h, emb, context, image_only_indicator)
            skips.append(h)
        h = self.middle_block(h, emb, context, image_only_indicator)
        for i, block in enumerate(self.output_blocks):
            h = block(ops.cat((h, skips[len(skips) - 1 - i]), axis=1), emb, context, image_only_indicator)
        return self.out(h)
