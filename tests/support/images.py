"""Images for tests: drawn dermoscopy studies with exact masks, and unusual but valid (or broken) encodings."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from apps.make_sample_data import draw_study


def draw_studies(root: Path, count: int, seed: int, shape: tuple[int, int] = (96, 128)) -> Path:
    """``count`` drawn photographs with exact masks in the images/ + masks/ layout under ``root``."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        img, mask = draw_study(rng, shape)
        Image.fromarray(img).save(root / "images" / f"s{i}.jpg", quality=95)
        Image.fromarray(mask.astype(np.uint8) * 255).save(root / "masks" / f"s{i}.png")
    return root


def rgb(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (h, w, 3), dtype=np.uint8)


def encode(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kwargs)
    return buf.getvalue()


def exif_rotated_jpeg(h: int = 48, w: int = 64) -> bytes:
    """A (h, w) JPEG whose EXIF orientation 6 says: show it rotated, as (w, h)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.fromarray(rgb(h, w)), "JPEG", exif=exif)


def odd_images() -> dict[str, tuple[str, bytes, tuple[int, int]]]:
    """Unusual but valid photographs: file extension, bytes and the upright (H, W) the app sees."""
    base = Image.fromarray(rgb())
    gray16 = Image.fromarray((np.arange(48 * 64).reshape(48, 64) * 20).astype(np.uint16))
    return {
        "gray": (".png", encode(base.convert("L"), "PNG"), (48, 64)),
        "rgba": (".png", encode(base.convert("RGBA"), "PNG"), (48, 64)),
        "palette": (".png", encode(base.convert("P"), "PNG"), (48, 64)),
        "16bit": (".png", encode(gray16, "PNG"), (48, 64)),
        "cmyk": (".jpg", encode(base.convert("CMYK"), "JPEG"), (48, 64)),
        "exif_rotated": (".jpg", exif_rotated_jpeg(), (64, 48)),
        "tiny": (".bmp", encode(Image.fromarray(rgb(8, 8)), "BMP"), (8, 8)),
        "tiff": (".tif", encode(base, "TIFF"), (48, 64)),
    }


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a huge size: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
