"""The SVD model: UNet, VAE and CLIP image tower plus the conditioning that ties them."""
import mindspore as ms
import numpy as np
from mindspore import Tensor, nn, ops

from svd.models.clip import VisionTransformer, clip_preprocess, resize_operators
from svd.models.layers import timestep_embedding
from svd.models.streamed_decoder import decode_frame_by_frame
from svd.models.unet import VideoUNet
from svd.models.vae import AutoencoderKL
from svd.sampling.diffusion import append_dims, v_scalings


def micro_conditioning(fps_id, motion_bucket_id, noise_aug_strength, dim):
    """``(n, 3*dim)`` sinusoids of fps-1, motion bucket and noise augmentation (in that order); tensors ``(n,)``."""
    return ops.cat([timestep_embedding(v, dim) for v in (fps_id, motion_bucket_id, noise_aug_strength)], axis=1)


class SVDModel(nn.Cell):
    """Holds the three networks; parameter prefixes are ``unet.``, ``vae.`` and ``image_encoder.``."""

    def __init__(self, unet, vae, image_encoder, micro_cond_dim=256, scale_factor=0.18215):
        super().__init__()
        self.unet = VideoUNet(**unet)
        self.vae = AutoencoderKL(**vae)
        self.image_encoder = VisionTransformer(**image_encoder)
        self.micro_cond_dim = micro_cond_dim
        self.scale_factor = scale_factor
        self.latent_channels = vae["embed_dim"]
        self.downscale = 2 ** (len(vae["ch_mult"]) - 1)
        self.size_multiple = self.downscale * 2 ** (len(unet["channel_mult"]) - 1)

    def embed_image(self, image, resize=None):
        """CLIP embedding of ``[-1, 1]`` images as a one-token context ``(b, 1, d)``.

        ``resize``: precomputed ``resize_operators`` (required inside compiled graphs).
        """
        if resize is None:
            resize = resize_operators(image.shape[2], image.shape[3], self.image_encoder.image_size)
        pixels = clip_preprocess(image, *resize)
        return self.image_encoder(pixels).reshape(image.shape[0], 1, -1)

    def condition_latent(self, image):
        """Posterior mode of the (noise-augmented) conditioning image, not scaled by scale_factor."""
        mean, _ = self.vae.encode_moments(image)
        return mean

    def vector(self, fps_id, motion_bucket_id, noise_aug_strength):
        """Micro-conditioning vector; accepts tensors or array-likes of shape ``(n,)``."""
        as_tensor = lambda v: v if isinstance(v, Tensor) else Tensor(np.asarray(v, np.float32).reshape(-1))
        return micro_conditioning(as_tensor(fps_id), as_tensor(motion_bucket_id), as_tensor(noise_aug_strength),
                                  self.micro_cond_dim)

    def denoise(self, x, sigma, concat, context, vector, image_only_indicator):
        """x0 estimate ``c_skip x + c_out F(c_in x, c_noise)`` in fp32; sigma is ``(b t,)``."""
        c_skip, c_out, c_in, c_noise = v_scalings(sigma)
        x = x.astype(ms.float32)
        net_in = ops.cat((x * append_dims(c_in, x.ndim), concat.astype(ms.float32)), axis=1)
        dtype = self.unet.out[2].weight.dtype
        out = self.unet(net_in.astype(dtype), c_noise, context.astype(dtype), vector.astype(dtype),
                        image_only_indicator.astype(dtype))
        return x * append_dims(c_skip, x.ndim) + out.astype(ms.float32) * append_dims(c_out, x.ndim)

    def decode(self, latents):
        """One chunk of latents ``(t, c, h, w)`` to frames in ``[-1, 1]``; the temporal layers see only this chunk.

        PyNative runs the decoder frame by frame (svd.models.streamed_decoder: the same result at a fraction of the
        memory); graph mode runs the compiled decoder.
        """
        z = latents / self.scale_factor
        if ms.get_context("mode") == ms.PYNATIVE_MODE:
            return decode_frame_by_frame(self.vae.decoder, self.vae.decoder_input(z))
        return self.vae.decode(z, latents.shape[0])
