"""Our networks against diffusers on the same random weights (tolerance: 1e-4 absolute, fp32 on CPU)."""
import numpy as np
import pytest
from mindspore import Tensor

torch = pytest.importorskip("torch")
reference = pytest.importorskip("tests.reference")

from svd.io.checkpoint import convert_to_ours, model_shapes  # noqa: E402
from svd.models.clip import clip_preprocess, resize_operators  # noqa: E402

ATOL = 1e-4


@pytest.fixture(scope="module")
def pair(tiny_model, tiny_model_cfg):
    torch.manual_seed(0)
    unet, vae, image_encoder = reference.build_reference(tiny_model_cfg)
    for seed, module in enumerate((unet, vae, image_encoder)):
        reference.randomize(module, seed)
    state = reference.diffusers_state(unet, vae, image_encoder)
    ours, report = convert_to_ours(state, model_shapes(tiny_model), tiny_model_cfg)
    assert report.ok(), report.summary()
    from mindspore import Parameter, load_param_into_net
    load_param_into_net(tiny_model, {k: Parameter(Tensor(v), name=k) for k, v in ours.items()}, strict_load=True)
    return tiny_model, unet, vae, image_encoder


def assert_close(ours, theirs, atol=ATOL):
    ours = ours.asnumpy() if hasattr(ours, "asnumpy") else np.asarray(ours)
    theirs = theirs.detach().numpy() if hasattr(theirs, "detach") else np.asarray(theirs)
    assert ours.shape == theirs.shape
    assert np.abs(theirs).max() > 1e-2, "reference output is ~0: the comparison would prove nothing"
    err = np.abs(ours - theirs).max()
    assert err <= atol, f"max abs error {err:.3e} > {atol:.0e}"


def test_unet_forward(pair, tiny_model_cfg):
    model, unet, _, _ = pair
    rng = np.random.default_rng(1)
    b, t = 2, 3
    sample = rng.standard_normal((b, t, 8, 8, 16)).astype(np.float32)
    c_noise = np.array([0.7, -1.2], np.float32)
    context = rng.standard_normal((b, 1, tiny_model_cfg["unet"]["context_dim"])).astype(np.float32)
    added = np.array([[6, 127, 0.02], [9, 40, 0.5]], np.float32)
    with torch.no_grad():
        theirs = unet(torch.from_numpy(sample), torch.from_numpy(c_noise), torch.from_numpy(context),
                      torch.from_numpy(added)).sample
    vector = model.vector(added[:, 0], added[:, 1], added[:, 2]).asnumpy()
    ours = model.unet(Tensor(sample.reshape(b * t, 8, 8, 16)), Tensor(np.repeat(c_noise, t)),
                      Tensor(np.repeat(context, t, axis=0)), Tensor(np.repeat(vector, t, axis=0)),
                      Tensor(np.zeros((b, t), np.float32)))
    assert_close(ours.asnumpy().reshape(theirs.shape), theirs)


def test_unet_image_only_frames_skip_temporal_layers(pair, tiny_model_cfg):
    """Frames flagged image-only must not depend on the other frames (alpha = 1 everywhere)."""
    model, _, _, _ = pair
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 8, 8, 16)).astype(np.float32)
    ctx = np.repeat(rng.standard_normal((1, 1, 64)).astype(np.float32), 3, axis=0)
    vec = rng.standard_normal((3, 96)).astype(np.float32)
    run = lambda x_, ind: model.unet(Tensor(x_), Tensor(np.zeros(3, np.float32)), Tensor(ctx), Tensor(vec),
                                     Tensor(ind)).asnumpy()
    ones = np.ones((1, 3), np.float32)
    changed = x.copy()
    changed[2] += 1.0
    np.testing.assert_allclose(run(x, ones)[:2], run(changed, ones)[:2], atol=1e-5)
    zeros = np.zeros((1, 3), np.float32)
    assert np.abs(run(x, zeros)[:2] - run(changed, zeros)[:2]).max() > 1e-3


def test_vae_encode(pair):
    model, _, vae, _ = pair
    x = np.random.default_rng(3).uniform(-1, 1, (2, 3, 64, 128)).astype(np.float32)
    with torch.no_grad():
        dist = vae.encode(torch.from_numpy(x)).latent_dist
    mean, logvar = model.vae.encode_moments(Tensor(x))
    assert_close(mean, dist.mean)
    assert_close(logvar, dist.logvar)


@pytest.mark.parametrize("num_frames", [1, 4])
def test_vae_decode(pair, num_frames):
    model, _, vae, _ = pair
    z = np.random.default_rng(4).standard_normal((num_frames, 4, 8, 16)).astype(np.float32)
    with torch.no_grad():
        theirs = vae.decode(torch.from_numpy(z), num_frames=num_frames).sample
    assert_close(model.vae.decoder(Tensor(z), num_frames), theirs)
    assert_close(model.decode(Tensor(z * model.scale_factor)), theirs)  # PyNative: the frame-by-frame decoder


def test_image_encoder(pair):
    model, _, _, image_encoder = pair
    pixels = np.random.default_rng(5).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        theirs = image_encoder(torch.from_numpy(pixels)).image_embeds
    assert_close(model.image_encoder(Tensor(pixels)), theirs)


@pytest.mark.parametrize("size", [(64, 128), (576, 1024), (100, 150)])
def test_clip_preprocessing(size):
    from diffusers.pipelines.stable_video_diffusion.pipeline_stable_video_diffusion import \
        _resize_with_antialiasing
    from svd.models.clip import CLIP_MEAN, CLIP_STD
    image = np.random.default_rng(6).uniform(-1, 1, (1, 3) + size).astype(np.float32)
    with torch.no_grad():
        theirs = (_resize_with_antialiasing(torch.from_numpy(image), (224, 224)) + 1.0) / 2.0
        theirs = (theirs - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    assert_close(clip_preprocess(Tensor(image), *resize_operators(size[0], size[1], 224)), theirs)


def test_three_step_sampling_matches_diffusers_pipeline(pair, tiny_cfg):
    """Whole image-to-video run: CLIP, noise augmentation, VAE conditioning, guided Euler, chunked decode."""
    from diffusers import EulerDiscreteScheduler, StableVideoDiffusionPipeline
    from PIL import Image
    from transformers import CLIPImageProcessor

    from svd.sampling.pipeline import ImageToVideoPipeline, SamplingOptions
    model, unet, vae, image_encoder = pair
    options = SamplingOptions.from_config(tiny_cfg.sampling, num_steps=3, num_frames=5, decode_chunk_size=3)
    scheduler = EulerDiscreteScheduler(prediction_type="v_prediction", use_karras_sigmas=True, sigma_min=0.002,
                                       sigma_max=700.0, timestep_type="continuous", timestep_spacing="leading")
    reference_pipe = StableVideoDiffusionPipeline(vae=vae, image_encoder=image_encoder, unet=unet,
                                                  scheduler=scheduler, feature_extractor=CLIPImageProcessor())
    reference_pipe.set_progress_bar_config(disable=True)
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (options.height, options.width, 3), dtype=np.uint8)
    latents = rng.standard_normal((1, options.num_frames, 4, options.height // 8, options.width // 8))
    latents = latents.astype(np.float32)
    generator = torch.Generator().manual_seed(11)
    cond_noise = torch.randn((1, 3, options.height, options.width), generator=torch.Generator().manual_seed(11))
    with torch.no_grad():
        theirs = reference_pipe(Image.fromarray(image), height=options.height, width=options.width,
                                num_frames=options.num_frames, num_inference_steps=options.num_steps,
                                min_guidance_scale=options.min_guidance_scale,
                                max_guidance_scale=options.max_guidance_scale, fps=options.fps,
                                motion_bucket_id=options.motion_bucket_id,
                                noise_aug_strength=options.noise_aug_strength,
                                decode_chunk_size=options.decode_chunk_size, generator=generator,
                                latents=torch.from_numpy(latents), output_type="np").frames[0]
    ours = ImageToVideoPipeline(model)(image, options, noise=latents[0], cond_noise=cond_noise.numpy(),
                                       progress=False)
    assert theirs.std() > 1e-2
    assert_close(ours, theirs)
