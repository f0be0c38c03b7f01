"""Video quality numbers without learned networks: PSNR/SSIM, motion (Farneback flow, frame differences)
and temporal consistency (flow-warping error). Frames are ``(T, H, W, 3)`` floats in [0, 1]."""
import cv2
import numpy as np


def psnr(a, b):
    """Peak signal-to-noise ratio in dB for images in [0, 1]."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)


def ssim(a, b):
    """Mean structural similarity of two RGB images in [0, 1] (scikit-image, Gaussian window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(np.asarray(a, np.float64), np.asarray(b, np.float64), channel_axis=-1,
                                       data_range=1.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def bicubic_baseline(image, factor=8):
    """The image shrunk ``factor`` times and enlarged back with bicubic filtering: what a VAE must beat."""
    h, w = image.shape[:2]
    small = cv2.resize(image.astype(np.float32), (max(1, w // factor), max(1, h // factor)),
                       interpolation=cv2.INTER_AREA)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def _gray(frame):
    return cv2.cvtColor((np.clip(frame, 0, 1) * 255).round().astype(np.uint8), cv2.COLOR_RGB2GRAY)


def farneback(previous, current):
    """Dense flow ``(H, W, 2)`` from ``previous`` to ``current`` (pixels)."""
    return cv2.calcOpticalFlowFarneback(_gray(previous), _gray(current), None, 0.5, 3, 9, 3, 5, 1.1, 0)


def mean_flow(frames):
    """Mean Farneback flow magnitude between consecutive frames, in pixels."""
    return float(np.mean([np.linalg.norm(farneback(a, b), axis=-1).mean() for a, b in zip(frames[:-1], frames[1:])]))


def mean_frame_difference(frames):
    """Mean absolute difference between consecutive frames (0-1 scale)."""
    frames = np.asarray(frames, np.float64)
    return float(np.abs(np.diff(frames, axis=0)).mean())


def warping_error(frames):
    """Mean |frame_t - frame_{t+1} warped back along the flow t -> t+1|: low when content moves coherently."""
    errors = []
    for a, b in zip(frames[:-1], frames[1:]):
        flow = farneback(a, b)
        h, w = flow.shape[:2]
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        warped = cv2.remap(np.asarray(b, np.float32), grid_x + flow[..., 0], grid_y + flow[..., 1],
                           cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        errors.append(np.abs(warped - np.asarray(a, np.float32)).mean())
    return float(np.mean(errors))
