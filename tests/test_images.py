"""load_image: every kind of source in, an RGB PIL image or one clear ImageLoadError out."""

from __future__ import annotations

import http.server
import io
import os
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from utils import images
from utils.images import SAMPLE_IMAGES, ImageLoadError, load_image, sample_image


def png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


@pytest.fixture()
def rgb_png(tmp_path: Path) -> Path:
    path = tmp_path / "red.png"
    Image.new("RGB", (20, 10), (200, 10, 10)).save(path)
    return path


# --- good inputs, in all their forms -------------------------------------------------------

def test_path_str_and_pathlib(rgb_png: Path) -> None:
    for src in (rgb_png, str(rgb_png)):
        image = load_image(src)
        assert image.mode == "RGB" and image.size == (20, 10)
        assert image.getpixel((0, 0)) == (200, 10, 10)


def test_bytes_file_object_pil_and_arrays(rgb_png: Path) -> None:
    data = rgb_png.read_bytes()
    array = np.zeros((4, 6, 3), np.uint8)
    array[..., 1] = 255
    sources = [data, bytearray(data), io.BytesIO(data), Image.open(rgb_png), array,
               array.astype(np.float32) / 255, torch.from_numpy(array).permute(2, 0, 1)]
    for src in sources:
        image = load_image(src)
        assert image.mode == "RGB", type(src)
    assert load_image(array).getpixel((0, 0)) == (0, 255, 0)
    assert load_image(torch.from_numpy(array).permute(2, 0, 1)).size == (6, 4)  # (C, H, W) tensor


def test_grayscale_and_bool_arrays() -> None:
    gray = np.full((3, 5), 77, np.uint8)
    assert load_image(gray).getpixel((4, 2)) == (77, 77, 77)
    assert load_image(np.ones((2, 2), bool)).getpixel((0, 0)) == (255, 255, 255)


def test_sixteen_bit_png_is_rescaled_to_eight_bit() -> None:
    ramp = np.linspace(0, 65535, 16, dtype=np.uint16).reshape(4, 4)
    image = load_image(png_bytes(Image.fromarray(ramp)))
    values = np.asarray(image)[..., 0]
    assert image.mode == "RGB" and values.min() == 0 and values.max() == 255
    assert np.all(np.diff(values.ravel().astype(int)) >= 0)  # order preserved


def test_sixteen_bit_and_float_images_keep_their_format_range() -> None:
    white16 = Image.fromarray(np.full((3, 3), 65535, np.uint16))
    assert load_image(png_bytes(white16)).getpixel((1, 1)) == (255, 255, 255)  # white stays white
    mid = np.linspace(20000, 29900, 12, dtype=np.uint16).reshape(3, 4)
    from_file, from_array = np.asarray(load_image(png_bytes(Image.fromarray(mid)))), np.asarray(load_image(mid))
    assert np.array_equal(from_file, from_array) and from_file.min() == 78 and from_file.max() == 116
    for constant in (Image.fromarray(np.full((2, 2), 30000, np.uint16)), Image.fromarray(np.full((2, 2), 30000, np.int32))):
        assert load_image(constant).getpixel((0, 0)) == (117,) * 3, constant.mode  # I;16 and I: 30000 / 257
    assert load_image(Image.fromarray(np.full((2, 2), 0.5, np.float32))).getpixel((0, 0)) == (128,) * 3  # mode F
    with pytest.raises(ImageLoadError, match="outside 0..65535"):
        load_image(Image.fromarray(np.full((2, 2), -5, np.int32)))


def test_float_tiffs_with_nan_inf_or_out_of_range_are_refused(tmp_path: Path) -> None:
    for bad, match in ((np.nan, "NaN or infinite"), (np.inf, "NaN or infinite"), (3.0, r"float values in \[0, 3\]")):
        values = np.zeros((4, 4), np.float32)
        values[1, 1] = bad
        path = tmp_path / "bad.tiff"
        Image.fromarray(values, mode="F").save(path)
        with pytest.raises(ImageLoadError, match=match):
            load_image(path)
        with pytest.raises(ImageLoadError, match=match):
            load_image(values)


def test_cmyk_jpeg_is_converted() -> None:
    buffer = io.BytesIO()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(buffer, format="JPEG", quality=95)  # pure red in CMYK
    r, g, b = load_image(buffer.getvalue()).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_is_composited_on_white() -> None:
    image = Image.new("P", (4, 4), 0)
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)  # index 0 is blue...
    image.putpixel((0, 0), 1)
    data = png_bytes(image, transparency=0)  # ...and fully transparent
    loaded = load_image(data)
    assert loaded.getpixel((3, 3)) == (255, 255, 255)  # transparent -> white, not blue
    assert loaded.getpixel((0, 0)) == (0, 0, 0)


def test_la_and_rgba_are_composited_on_white() -> None:
    rgba = Image.new("RGBA", (2, 2), (255, 0, 0, 0))
    rgba.putpixel((1, 1), (255, 0, 0, 255))
    loaded = load_image(png_bytes(rgba))
    assert loaded.getpixel((0, 0)) == (255, 255, 255) and loaded.getpixel((1, 1)) == (255, 0, 0)
    la = Image.new("LA", (2, 2), (0, 0))
    assert load_image(png_bytes(la)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_rotation_is_applied() -> None:
    image = Image.new("RGB", (30, 10), (0, 128, 0))  # wide as stored...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...but the camera says "rotate 90 degrees clockwise to display"
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_image(buffer.getvalue()).size == (10, 30)


# --- bad inputs: each one a clear error naming the source and the fix -------------------------

def test_missing_file() -> None:
    with pytest.raises(ImageLoadError, match=r"no file at 'nope\.png'.*check the path"):
        load_image("nope.png")


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ImageLoadError, match="is a directory"):
        load_image(tmp_path)


def test_corrupt_bytes() -> None:
    with pytest.raises(ImageLoadError, match="not an image file"):
        load_image(b"this is not a picture at all")


def test_html_saved_as_png(tmp_path: Path) -> None:
    page = tmp_path / "photo.png"
    page.write_text("<html><body>404 Not Found</body></html>")
    with pytest.raises(ImageLoadError, match="photo.png.*not an image file"):
        load_image(page)


def test_truncated_png(rgb_png: Path) -> None:
    data = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    with pytest.raises(ImageLoadError, match="truncated or damaged"):
        load_image(data[: len(data) // 2])


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(empty)


def test_wrong_type() -> None:
    with pytest.raises(ImageLoadError, match="cannot load an image from int.*file path"):
        load_image(42)
    with pytest.raises(ImageLoadError, match="cannot load an image from list"):
        load_image([[0, 1], [1, 0]])


def test_zero_size_array_and_image() -> None:
    with pytest.raises(ImageLoadError, match="no pixels"):
        load_image(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(ImageLoadError, match="no pixels"):
        load_image(Image.new("RGB", (0, 5)))


def test_bad_arrays() -> None:
    with pytest.raises(ImageLoadError, match="not an image array"):
        load_image(np.zeros((2, 3, 4, 5), np.uint8))
    with pytest.raises(ImageLoadError, match=r"must lie in \[0, 1\]"):
        load_image(np.full((2, 2, 3), 3.5, np.float32))
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(np.full((2, 2), np.nan))
    with pytest.raises(ImageLoadError, match="outside 0..255"):
        load_image(np.full((2, 2), 1000, np.int32))


def test_huge_image_is_refused_as_decompression_bomb() -> None:
    data = png_bytes(Image.new("L", (4000, 4000)))  # compresses to a few kB, decodes to 16 MP
    with pytest.raises(ImageLoadError, match="too large to load safely.*Resize it first"):
        load_image(data, max_pixels=1_000_000)
    assert load_image(data).size == (4000, 4000)  # under the default cap it loads


def test_the_pixel_cap_never_touches_pils_process_wide_limit() -> None:
    data, before, seen = png_bytes(Image.new("L", (64, 64))), Image.MAX_IMAGE_PIXELS, set()
    done = threading.Event()

    def load_many() -> None:
        for _ in range(100):
            load_image(data, max_pixels=10**12)

    threads = [threading.Thread(target=load_many) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        seen.add(Image.MAX_IMAGE_PIXELS)
    done.set()
    assert seen <= {before} and Image.MAX_IMAGE_PIXELS == before


def test_only_regular_files_are_read(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.append(pytest.raises(ImageLoadError, load_image, fifo)), daemon=True)
    reader.start()
    reader.join(5)
    assert outcome and "not a regular file" in str(outcome[0].value), "a FIFO must be refused, not read forever"
    with pytest.raises(ImageLoadError, match="not a regular file"):
        load_image("/dev/zero")


def test_huge_in_memory_image_is_refused() -> None:
    with pytest.raises(ImageLoadError, match="over the 100-pixel cap"):
        load_image(Image.new("RGB", (20, 20)), max_pixels=100)


def test_unreachable_url_fails_fast_and_clearly() -> None:
    with pytest.raises(ImageLoadError, match=r"cannot download http://127\.0\.0\.1:9/cat\.png.*sample_image"):
        load_image("http://127.0.0.1:9/cat.png", timeout=2, allow_private=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path == "/red.png":
            body = png_bytes(Image.new("RGB", (3, 3), (255, 0, 0)))
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/drip.png":  # one byte every 0.2 s: never silent for long, never done
            self.send_response(200)
            self.send_header("Content-Length", "1000000")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
        elif self.path.startswith("/redirect-to/"):
            self.send_response(302)
            self.send_header("Location", self.path.removeprefix("/redirect-to/"))
            self.end_headers()
        else:
            self.send_error(404)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def local_server():
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_url_from_a_local_server(local_server: str) -> None:
    assert load_image(f"{local_server}/red.png", allow_private=True).getpixel((1, 1)) == (255, 0, 0)
    with pytest.raises(ImageLoadError, match="answered HTTP 404"):
        load_image(f"{local_server}/missing.png", allow_private=True)


def test_private_and_loopback_addresses_need_an_opt_in(local_server: str) -> None:
    for url in (f"{local_server}/red.png", "http://10.1.2.3/x.png", "http://169.254.169.254/latest/meta-data",
                "http://[::1]/x.png", "http://0.0.0.0/x.png"):
        with pytest.raises(ImageLoadError, match="inside this computer or its network.*allow_private=True"):
            load_image(url, timeout=1)


def test_a_dripping_server_meets_the_overall_deadline(local_server: str) -> None:
    start = time.monotonic()
    with pytest.raises(ImageLoadError, match=r"took over 1 s to download"):
        load_image(f"{local_server}/drip.png", timeout=5, deadline=1, allow_private=True)
    assert time.monotonic() - start < 5


def test_redirects_only_to_http_and_never_down_from_https(local_server: str) -> None:
    for target in ("file:///etc/passwd", "ftp://example.com/x.png"):
        with pytest.raises(ImageLoadError, match="not an http\\(s\\) address"):
            load_image(f"{local_server}/redirect-to/{target}", allow_private=True)
    assert load_image(f"{local_server}/redirect-to/{local_server}/red.png", allow_private=True).size == (3, 3)
    handler = images._CheckedRedirects(allow_private=True)
    request = urllib.request.Request("https://example.com/cat.png")
    with pytest.raises(ImageLoadError, match="from https down to an unencrypted address"):
        handler.redirect_request(request, None, 302, "Found", {}, "http://example.com/cat.png")


# --- sample images ---------------------------------------------------------------------------

def test_every_sample_image_loads_offline() -> None:
    for name in SAMPLE_IMAGES:
        image = sample_image(name, mode="tiny")
        assert image.mode == "RGB" and min(image.size) >= 256
    assert sample_image("cat", mode="tiny").size == (451, 300)


def test_full_mode_falls_back_to_the_offline_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    import utils.images as images

    def no_network(*args, **kwargs):
        raise ImageLoadError("network is down")

    original = images.load_image
    monkeypatch.setattr(images, "load_image", lambda src, **kw: no_network() if isinstance(src, str) else original(src, **kw))
    with pytest.warns(UserWarning, match="offline copy of 'cat'"):
        image = images.sample_image("cat", mode="full")
    assert image.size == (451, 300)


def test_unknown_sample_image() -> None:
    with pytest.raises(ImageLoadError, match="no sample image called 'dog'; choose one of cat"):
        sample_image("dog")
