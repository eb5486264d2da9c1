"""Loading images the same way everywhere: a path, a URL, bytes, a PIL image or an array in,
an RGB PIL image out, or one clear :class:`ImageLoadError` that says what went wrong and how
to fix it.

Also :func:`sample_image`, the named demo photos used across the course. They ship inside
installed packages (scikit-image and scikit-learn), so they work offline.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import stat
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

MAX_PIXELS = 50_000_000  # about 7000 x 7000; anything bigger is refused as a likely decompression bomb
MAX_DOWNLOAD_BYTES = 25 * 2**20
MAX_FILE_BYTES = 200 * 2**20  # a larger file is not a photo a chapter needs
URL_TIMEOUT_S = 10.0  # the longest wait for any one answer from a server
URL_DEADLINE_S = 60.0  # the longest a whole download may take, however steadily the bytes trickle in
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


def load_image(src: Any, *, timeout: float = URL_TIMEOUT_S, deadline: float = URL_DEADLINE_S,
               max_pixels: int = MAX_PIXELS, allow_private: bool = False) -> Image.Image:
    """Load ``src`` as an RGB PIL image.

    ``src`` may be a file path (str or Path) to a regular file, an http(s) URL, raw bytes or a
    binary file object, a PIL image, or a NumPy array / torch tensor (H x W, H x W x C, or
    C x H x W for tensors). Grayscale, palette and CMYK images are converted; transparency is
    composited on white; the EXIF orientation is applied. Images over ``max_pixels`` are refused.

    Values are mapped by their format's range, the same for files and arrays: 8-bit as they are,
    16-bit divided by 257 (65535 -> 255), floats from [0, 1] (NaN, infinities and values outside
    [0, 1] are refused).

    A URL download gives up after ``timeout`` seconds of silence or ``deadline`` seconds in all,
    stops at 25 MB, follows redirects only to http(s) (never from https down to http), and
    refuses loopback, private and link-local addresses unless ``allow_private`` is True.
    """
    name = _describe(src)
    if isinstance(src, Image.Image):
        image = src
    elif isinstance(src, np.ndarray) or type(src).__module__.startswith("torch"):
        image = _from_array(src, name)
    elif isinstance(src, (bytes, bytearray, memoryview)):
        image = _open_bytes(bytes(src), name, max_pixels)
    elif hasattr(src, "read"):
        data = src.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise ImageLoadError(f"{name} holds over {MAX_FILE_BYTES // 2**20} MB: not an image a chapter needs")
        image = _open_bytes(data, name, max_pixels)
    elif isinstance(src, (str, os.PathLike)):
        text = os.fspath(src)
        if text.startswith(("http://", "https://")):
            image = _open_bytes(_fetch(text, timeout, deadline, allow_private), name, max_pixels)
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
        mode = p.stat().st_mode
        if not stat.S_ISREG(mode):  # a FIFO would block forever, /dev/zero would never end
            raise ImageLoadError(f"{path!r} is not a regular file (a pipe, socket or device): save the image to a file")
        with p.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise ImageLoadError(f"cannot read {path!r}: {exc.strerror or exc}; check its permissions") from exc
    if len(data) > MAX_FILE_BYTES:
        raise ImageLoadError(f"{path!r} is over {MAX_FILE_BYTES // 2**20} MB: not an image a chapter needs")
    return data


def check_url(url: str, allow_private: bool = False) -> None:
    """Refuse what a download should never go to: another scheme, or (unless ``allow_private``) a
    loopback, private, link-local or reserved address, which would reach into the reader's own
    network. The host is resolved here; a server that resolves differently a moment later
    (DNS rebinding) is out of this check's reach."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ImageLoadError(f"{url!r} is not an http(s) address: only http:// and https:// images are downloaded")
    if allow_private:
        return
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(parts.hostname, parts.port or 80)}
    except (socket.gaierror, UnicodeError) as exc:
        raise ImageLoadError(f"cannot download {url}: the host {parts.hostname!r} is unknown ({exc}). Check the "
                             "address, or load a local file or `sample_image(...)` instead (they work offline)") from exc
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_reserved or ip.is_multicast or ip.is_unspecified:
            raise ImageLoadError(f"{url} points to {address}, an address inside this computer or its network; "
                                 "pass allow_private=True if you mean to load from there")


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an address :func:`check_url` accepts, and never from https to http."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private

    def http_error_302(self, req, fp, code, msg, headers):  # noqa: ANN001 - urllib's signature
        target = headers.get("location") or headers.get("uri")
        if target:  # checked before urllib's own scheme check, so every refusal reads the same
            check_url(urllib.parse.urljoin(req.full_url, target), self.allow_private)
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302

    def redirect_request(self, req, fp, code, msg, headers, newurl):  # noqa: ANN001 - urllib's signature
        if req.full_url.startswith("https://") and not newurl.startswith("https://"):
            raise ImageLoadError(f"{req.full_url} redirects to {newurl}, from https down to an unencrypted address")
        check_url(newurl, self.allow_private)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _fetch(url: str, timeout: float, deadline: float, allow_private: bool) -> bytes:
    check_url(url, allow_private)
    opener = urllib.request.build_opener(_CheckedRedirects(allow_private))
    request = urllib.request.Request(url, headers={"User-Agent": "mmllm-course/1.0"})
    give_up = time.monotonic() + deadline
    try:
        with opener.open(request, timeout=timeout) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_DOWNLOAD_BYTES:
                raise ImageLoadError(
                    f"{url} is {int(declared) / 2**20:.0f} MB, over the {MAX_DOWNLOAD_BYTES // 2**20} MB cap: "
                    "download and shrink it first"
                )
            data = bytearray()
            while len(data) <= MAX_DOWNLOAD_BYTES:
                if time.monotonic() > give_up:
                    raise ImageLoadError(f"{url} took over {deadline:g} s to download: the server is too slow; "
                                         "download it another way and load the file")
                chunk = response.read1(64 * 1024)  # whatever has arrived, waiting at most `timeout`
                if not chunk:
                    break
                data += chunk
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
    return bytes(data)


def _open_bytes(data: bytes, name: str, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageLoadError(f"{name} is empty (0 bytes): the file or download holds no image")
    too_large = (f"{name} is too large to load safely; images over {max_pixels:,} pixels are refused. "
                 "Resize it first, or pass a larger max_pixels if you trust the file")
    try:
        # The size is checked here, from the header, before decoding. PIL's own process-wide
        # Image.MAX_IMAGE_PIXELS is left alone: changing it would change it for every thread.
        image = Image.open(io.BytesIO(data))
        if image.size[0] * image.size[1] > max_pixels:
            raise ImageLoadError(f"{too_large} ({image.size[0]}x{image.size[1]})")
        image.load()  # decode now, so truncated files fail here and not deep inside a model
    except ImageLoadError:
        raise
    except Image.DecompressionBombError as exc:  # over twice PIL's own limit
        raise ImageLoadError(f"{too_large} ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(
            f"{name} is not an image file PIL can read (corrupt, or another format such as HTML or PDF)"
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageLoadError(f"{name} could not be decoded ({exc}): the file is probably truncated or damaged") from exc
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
        array = _unit_float(array, name)
    elif array.dtype == np.uint16:
        array = _sixteen_bit(array)
    elif array.dtype != np.uint8:
        if array.min() < 0 or array.max() > 255:
            raise ImageLoadError(f"{name} has integer values outside 0..255; convert it to uint8 first")
        array = array.astype(np.uint8)
    return Image.fromarray(array)


def _sixteen_bit(values: np.ndarray) -> np.ndarray:
    """16-bit values to 8 bits by the format's range: 0 -> 0, 65535 -> 255 (divide by 257)."""
    return np.round(values.astype(np.float64) / 257).astype(np.uint8)


def _unit_float(values: np.ndarray, name: str) -> np.ndarray:
    """Float values in [0, 1] to 8 bits; NaN, infinities and values outside [0, 1] are refused."""
    if not np.isfinite(values).all():
        raise ImageLoadError(f"{name} contains NaN or infinite values: they have no colour; fix or mask them first")
    if values.min() < 0 or values.max() > 1:
        raise ImageLoadError(
            f"{name} holds float values in [{values.min():.3g}, {values.max():.3g}]; "
            "float images must lie in [0, 1] (divide by 255, or un-normalise first)"
        )
    return np.round(values.astype(np.float64) * 255).astype(np.uint8)


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
    if mode.startswith("I;16") or mode == "I":  # 16-bit grayscale (PNG and TIFF), as 16-bit arrays are
        values = np.asarray(image)
        if values.min() < 0 or values.max() > 65535:
            raise ImageLoadError(f"{name} is a 32-bit integer image with values outside 0..65535; convert it to "
                                 "8 or 16 bits first")
        image, mode = Image.fromarray(_sixteen_bit(values), mode="L"), "L"
    elif mode == "F":  # float grayscale: read as float arrays are, from [0, 1]
        image, mode = Image.fromarray(_unit_float(np.asarray(image), name), mode="L"), "L"
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

        mode = "rehearsal" if runtime.REHEARSAL else runtime.MODE
    if mode == "full" and url is not None:  # (a rehearsal stays offline: it uses the shipped copy)
        try:
            return load_image(url)
        except ImageLoadError as exc:
            warnings.warn(f"using the offline copy of {name!r}: {exc}", stacklevel=2)
    return load_image(offline())
