"""Reading conditioning images (files, PIL images, arrays) and writing videos (mp4 via libx264, gif, PNG frames)."""
import os
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from svd.models.resize import fit_image


SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_image(path):
    """The pixels of an image file as ``H x W x 3``: uint8, or uint16 for 16-bit greyscale; EXIF orientation applied."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' does not exist")
    try:
        with Image.open(path) as img:
            # Phones store portrait photos as landscape pixels plus an EXIF orientation tag: apply it.
            return pil_to_array(ImageOps.exif_transpose(img))
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"image '{path}' cannot be read as an image: {err}") from None
    except ValueError as err:
        raise ValueError(f"image '{path}': {err}") from None


def pil_to_array(img):
    """``H x W x 3`` array of a PIL image; 16-bit greyscale stays uint16 (PIL's RGB conversion would clip it)."""
    if img.mode in SIXTEEN_BIT_MODES:
        grey = np.asarray(img).astype(np.uint16)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode in ("I", "F"):
        raise ValueError(f"PIL image mode '{img.mode}' has no fixed value range: convert it to 'RGB' or pass "
                         "a uint16 or [0, 1] float array")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        return flatten_alpha(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


def flatten_alpha(img):
    """RGB of an RGBA image composited over white, as a viewer shows it (dropping alpha would reveal whatever
    colour the transparent pixels happen to store, often black); says so when any pixel is see-through."""
    rgba = np.asarray(img).astype(np.float32)
    alpha = rgba[..., 3:] / 255.0
    if (alpha < 1.0).any():
        print(f"note: the image has transparent pixels ({(alpha[..., 0] < 1.0).mean():.0%}); they are composited "
              "over white", file=sys.stderr)
    return (rgba[..., :3] * alpha + 255.0 * (1.0 - alpha) + 0.5).astype(np.uint8)


def unit_rgb(array, label="image"):
    """``H x W x 3`` uint8 / uint16 / float-in-[0, 1] array -> float32 in [0, 1].

    Anything else (other integer types, floats outside [0, 1], other channel counts) is an error,
    because guessing its range would silently give a wrong video.
    """
    array = np.asarray(array)
    if array.ndim != 3 or array.shape[2] != 3:
        hint = " (channels first? pass H x W x 3)" if array.ndim == 3 and array.shape[0] == 3 else ""
        raise ValueError(f"{label}: expected an H x W x 3 RGB array, got shape {array.shape}{hint}")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535.0
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{label}: dtype {array.dtype} has no known value range; pass uint8 (0-255), "
                         "uint16 (0-65535) or float in [0, 1]")
    if not np.isfinite(array).all():
        raise ValueError(f"{label}: has NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise ValueError(f"{label}: float values must be in [0, 1], got {low:g}..{high:g} (0-255 data: divide by "
                         "255 or pass uint8; [-1, 1] data: pass (x + 1) / 2)")
    return array.astype(np.float32)


def rgb_images(image):
    """The image input of the pipeline as a list of float32 ``H x W x 3`` arrays in [0, 1].

    ``image``: a PIL image, a path or an ``H x W x 3`` array; a list of those, or an ``N x H x W x 3`` array.
    """
    if isinstance(image, (list, tuple)):
        if not image:
            raise ValueError("image list is empty")
        return [unit_rgb(_one_image(item, f"image {i}"), f"image {i}") for i, item in enumerate(image)]
    if isinstance(image, np.ndarray) and image.ndim == 4:
        return [unit_rgb(item, f"image {i}") for i, item in enumerate(image)]
    return [unit_rgb(_one_image(image, "image"))]


def _one_image(item, label):
    """Raw pixels of one image input, before its value range is checked."""
    if isinstance(item, Image.Image):
        return pil_to_array(item)
    if isinstance(item, (str, os.PathLike)):
        return read_image(item)
    if isinstance(item, np.ndarray):
        return item
    raise ValueError(f"{label}: expected a PIL image, a path or an H x W x 3 array, got {type(item).__name__}")


def load_image(path, height, width, mode="cover"):
    """RGB uint8 ``(height, width, 3)`` of an image file, fitted by ``svd.models.resize.fit_image`` (cover/stretch)."""
    return to_uint8(fit_image(unit_rgb(read_image(path)), height, width, mode))


def to_uint8(frames):
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def output_kind(path):
    """'mp4', 'gif', 'strip' (one .png of every frame side by side) or 'frames' (a folder of PNGs); checked
    before any work is done."""
    suffix = Path(path).suffix
    kinds = {".mp4": "mp4", ".gif": "gif", ".png": "strip", "": "frames"}
    if suffix not in kinds:
        raise ValueError(f"output '{path}': expected a .mp4 or .gif file, a .png strip or a folder for PNG frames")
    return kinds[suffix]


def check_output(path, fps=None, overwrite=True):
    """The output's kind ('mp4', 'gif', 'frames'), after checking it can be written, before any work is done:
    a file path that is not an existing folder, a frames folder that is not an existing file, a folder
    we can write in, and a positive frame rate. ``overwrite`` False also refuses an existing video file or a
    folder that already holds frames (the command-line tools replace them only when told to)."""
    from svd.io.schema import check_writable_folder

    kind = output_kind(path)
    path = Path(path)
    if kind == "frames":
        if path.exists() and not path.is_dir():
            raise FileExistsError(f"output '{path}' is an existing file, where a folder of PNG frames would go "
                                  "(give a .mp4/.gif file or another folder)")
        if not overwrite and path.is_dir() and any(path.glob("frame_*.png")):
            raise FileExistsError(f"output folder '{path}' already holds frames; pass --overwrite to replace them")
        check_writable_folder(path, "output folder")
    else:
        if path.is_dir():
            raise IsADirectoryError(f"output '{path}' is an existing folder, expected a .{kind} file path")
        if not overwrite and path.exists():
            raise FileExistsError(f"output '{path}' exists; pass --overwrite to replace it")
        check_writable_folder(path.parent, f"output '{path}': folder")
    if fps is not None and not fps > 0:
        raise ValueError(f"output '{path}': fps must be > 0, got {fps}")
    return kind


def write_video(frames, path, fps):
    """``frames``: ``(T, H, W, 3)`` floats in [0, 1]. A .png path gets the frames side by side; a path
    without a suffix is a folder of PNGs."""
    path = Path(path)
    kind = check_output(path, fps)
    video = to_uint8(frames)
    if kind == "mp4":
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, video, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
    elif kind == "gif":
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, video, plugin="pillow", duration=1000.0 / fps, loop=0)
    elif kind == "strip":
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, np.concatenate(list(video), axis=1))
    else:
        path.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(video):
            iio.imwrite(path / f"frame_{i:04d}.png", frame)
    return path
