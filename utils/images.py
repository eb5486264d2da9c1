"""Loading images the same way everywhere: a path, a URL, bytes, a PIL image or an array in,
an RGB PIL image out, or one clear :class:`ImageLoadError` that says what went wrong and how
to fix it.

Also :func:`sample_image`, the named demo photos used across the course. They ship inside
installed packages (scikit-image and scikit-learn), so they work offline.
"""

from __future__ import annotations

import io
import os
import urllib.error
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # about 7000 x 7000; anything bigger is refused as a likely decompression bomb
MAX_DOWNLOAD_BYTES = 25 * 2**20
URL_TIMEOUT_S = 10.0
WHITE = (255, 255, 255)


class ImageLoadError(ValueError):
    """An image could not be loaded. The message names the source and the fix."""


def _describe(src: Any) -> str:
    if isinstance(src, (bytes, bytearray, memoryview)):
        return f"<{len(src)} bytes>"
    if isinstance(src, np.ndarray):
        return f"<array of shape {src.shape}, dtype {src.dtype}>"
    if isinstance(src, Image.Image):
        return f"<PIL image {src.mode} {src.size[0]}x{src.size[1]}>"
    text = str(src)
    return text if len(text) <= 120 else text[:117] + "..."


def load_image(src: Any, *, timeout: float = URL_TIMEOUT_S, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Load ``src`` as an RGB PIL image.

    ``src`` may be a file path (str or Path), an http(s) URL, raw bytes or a binary file object,
    a PIL image, or a NumPy array / torch tensor (H x W, H x W x C, or C x H x W for tensors).
    Grayscale, palette, CMYK and 16-bit images are converted; transparency is composited on white;
    the EXIF orientation is applied. Images over ``max_pixels`` are refused.
    """
    name = _describe(src)
    if isinstance(src, Image.Image):
        image = src
    elif isinstance(src, np.ndarray) or type(src).__module__.startswith("torch"):
        image = _from_array(src, name)
    elif isinstance(src, (bytes, bytearray, memoryview)):
        image = _open_bytes(bytes(src), name, max_pixels)
    elif hasattr(src, "read"):
        image = _open_bytes(src.read(), name, max_pixels)
    elif isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        if text.startswith(("http://", "https://")):
            image = _open_bytes(_fetch(text, timeout), name, max_pixels)
        else:
            image = _open_bytes(_read_file(text), name, max_pixels)
    else:
        raise ImageLoadError(
            f"cannot load an image from {type(src).__name__} {name}: pass a file path, an http(s) URL, "
            "bytes, a PIL image or a NumPy array"
        )
    return _to_rgb(image, name, max_pixels)


def _read_file(path: str) -> bytes:
    p = Path(path).expanduser()
    if not p.exists():
        raise ImageLoadError(f"no file at {path!r}: check the path (relative paths start from {Path.cwd()})")
    if p.is_dir():
        raise ImageLoadError(f"{path!r} is a directory, not an image file: pass one of the files inside it")
    try:
        return p.read_bytes()
    except OSError as exc:
        raise ImageLoadError(f"cannot read {path!r}: {exc.strerror or exc}; check its permissions") from exc


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "mmllm-course/1.0"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and int(declared) > MAX_DOWNLOAD_BYTES:
                raise ImageLoadError(
                    f"{url} is {int(declared) / 2**20:.0f} MB, over the {MAX_DOWNLOAD_BYTES // 2**20} MB cap: "
                    "download and shrink it first"
                )
            data = response.read(MAX_DOWNLOAD_BYTES + 1)
    except ImageLoadError:
        raise
    except urllib.error.HTTPError as exc:
        raise ImageLoadError(f"{url} answered HTTP {exc.code} ({exc.reason}): check the address") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ImageLoadError(
            f"cannot download {url}: {reason}. Check the network, or load a local file or "
            "`sample_image(...)` instead (they work offline)"
        ) from exc
    if len(data) > MAX_DOWNLOAD_BYTES:
        raise ImageLoadError(f"{url} is over the {MAX_DOWNLOAD_BYTES // 2**20} MB cap: download and shrink it first")
    return data


def _open_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageLoadError(f"{name} is empty (0 bytes): the file or download holds no image")
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()  # decode now, so truncated files fail here and not deep inside a model
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageLoadError(
            f"{name} is too large to load safely ({exc}); images over {max_pixels:,} pixels are refused. "
            "Resize it first, or pass a larger max_pixels if you trust the file"
        ) from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"{name} is not an image file PIL can read (corrupt, or another format such as HTML or PDF)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{name} could not be decoded ({exc}): the file is probably truncated or damaged") from exc
    finally:
        Image.MAX_IMAGE_PIXELS = previous
    return image


def _from_array(array: Any, name: str) -> Image.Image:
    if type(array).__module__.startswith("torch"):
        array = array.detach().cpu().numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.transpose(array, (1, 2, 0))  # torch images are (C, H, W)
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise ImageLoadError(
            f"{name} is not an image array: expected H x W (gray), H x W x 3 (RGB) or H x W x 4 (RGBA)"
        )
    if array.size == 0:
        raise ImageLoadError(f"{name} has no pixels (a zero-sized dimension)")
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ImageLoadError(f"{name} contains NaN or infinite values")
        if array.min() < 0 or array.max() > 1:
            raise ImageLoadError(
                f"{name} is a float array with values in [{array.min():.3g}, {array.max():.3g}]; "
                "float images must lie in [0, 1] (divide by 255, or un-normalise first)"
            )
        array = np.round(array * 255).astype(np.uint8)
    elif array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ImageLoadError(f"{name} has integer values outside 0..255; convert it to uint8 first")
        array = array.astype(np.uint8)
    return Image.fromarray(array)


def _to_rgb(image: Image.Image, name: str, max_pixels: int) -> Image.Image:
    width, height = image.size
    if width == 0 or height == 0:
        raise ImageLoadError(f"{name} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise ImageLoadError(
            f"{name} is {width}x{height} = {width * height:,} pixels, over the {max_pixels:,}-pixel cap: resize it first"
        )
    image = ImageOps.exif_transpose(image)  # phones store rotation in EXIF instead of rotating pixels
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit or float grayscale: rescale the actual range to 0..255.
        values = np.asarray(image, dtype=np.float64)
        low, high = values.min(), values.max()
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(np.round((values - low) * scale).astype(np.uint8), mode="L")
        mode = "L"
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "La", "RGBa"):
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, WHITE)
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB") if image.mode != "RGB" else image.copy()


# --- Named demo photos -------------------------------------------------------------------

def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from skimage import data

        return getattr(data, name)()

    return load


def _sklearn(filename: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(filename)

    return load


_SKIMAGE_RAW = "https://raw.githubusercontent.com/scikit-image/scikit-image/v0.26.0/src/skimage/data/"

# name -> (offline loader, URL full mode may fetch instead, one-line description)
SAMPLE_IMAGES: dict[str, tuple[Callable[[], np.ndarray], str | None, str]] = {
    "cat": (_skimage("chelsea"), _SKIMAGE_RAW + "chelsea.png", "Chelsea the cat, 451 x 300"),
    "astronaut": (_skimage("astronaut"), _SKIMAGE_RAW + "astronaut.png", "astronaut Eileen Collins, 512 x 512"),
    "coffee": (_skimage("coffee"), _SKIMAGE_RAW + "coffee.png", "a cup of coffee, 600 x 400"),
    "rocket": (_skimage("rocket"), _SKIMAGE_RAW + "rocket.jpg", "a rocket on the launch pad, 640 x 427"),
    "camera": (_skimage("camera"), None, "the cameraman (grayscale), 512 x 512"),
    "china": (_sklearn("china.jpg"), None, "a Chinese temple, 640 x 427"),
    "flower": (_sklearn("flower.jpg"), None, "a flower, 640 x 427"),
}


def sample_image(name: str, mode: str | None = None) -> Image.Image:
    """A named demo photo as an RGB PIL image (see :data:`SAMPLE_IMAGES` for the names).

    Tiny mode uses the copy shipped in scikit-image / scikit-learn. Full mode fetches the URL
    when there is one and falls back to the offline copy if that fails.
    """
    if name not in SAMPLE_IMAGES:
        raise ImageLoadError(f"no sample image called {name!r}; choose one of {', '.join(SAMPLE_IMAGES)}")
    offline, url, _ = SAMPLE_IMAGES[name]
    if mode is None:
        from utils import runtime

        mode = runtime.MODE
    if mode == "full" and url is not None:
        try:
            return load_image(url)
        except ImageLoadError as exc:
            warnings.warn(f"using the offline copy of {name!r}: {exc}", stacklevel=2)
    return load_image(offline())
