"""Reading the conditioning image and writing videos (mp4 via libx264, gif, or PNG frames)."""
from pathlib import Path

import imageio.v3 as iio
import numpy as np
from PIL import Image, UnidentifiedImageError

def load_image(path, height, width):
    """RGB uint8 ``(height, width, 3)``: resized to cover the target, then centre-cropped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image '{path}' does not exist")
    try:
        with Image.open(path) as img:
            img = img.convert("RGB")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"image '{path}' cannot be read as an image: {err}") from None
    scale = max(height / img.height, width / img.width)
    size = (max(width, round(img.width * scale)), max(height, round(img.height * scale)))
    img = img.resize(size, Image.Resampling.LANCZOS)
    left, top = (size[0] - width) // 2, (size[1] - height) // 2
    return np.asarray(img.crop((left, top, left + width, top + height)))


def to_uint8(frames):
    return (np.clip(frames, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def output_kind(path):
    """'mp4', 'gif' or 'frames' (a folder); checked before any work is done."""
    suffix = Path(path).suffix
    kinds = {".mp4": "mp4", ".gif": "gif", "": "frames"}
    if suffix not in kinds:
        raise ValueError(f"output '{path}': expected a .mp4 or .gif file or a folder for PNG frames")
    return kinds[suffix]


def write_video(frames, path, fps):
    """``frames``: ``(T, H, W, 3)`` floats in [0, 1]. A path without .mp4/.gif is a folder of PNGs."""
    path = Path(path)
    kind = output_kind(path)
    video = to_uint8(frames)
    if kind == "mp4":
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, video, plugin="FFMPEG", fps=fps, codec="libx264", macro_block_size=1)
    elif kind == "gif":
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(path, video, plugin="pillow", duration=1000.0 / fps, loop=0)
    else:
        path.mkdir(parents=True, exist_ok=True)
        for i, frame in enumerate(video):
            iio.imwrite(path / f"frame_{i:04d}.png", frame)
    return path
