#!/usr/bin/python3
"""image_conformance.py: `mmmamba preprocess` against the reference preprocessing in Pillow.

Generates a varied image set in a temporary directory (odd sizes, extreme aspect ratios, a large
photo-like JPEG, every PNG colour type and bit depth written by a small PNG encoder below so that
interlacing, 16-bit samples and tRNS are all covered, JPEG baseline / progressive / grayscale /
CMYK), runs the reference pipeline (Image.open(f).convert("RGB"), docs/model.md §4 tiling,
Image.resize, crops, thumbnail, numpy normalisation) and compares tile by tile. Also feeds
corrupt and hostile files and checks for a clear error and a non-zero exit without a crash.

Usage: image_conformance.py --mmmamba PATH [--keep DIR] [--quick]
Exit status: 0 pass, 1 fail.
"""
import argparse
import base64
import io
import math
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib

import numpy as np
from PIL import Image

S = 448
warnings.filterwarnings("ignore", category=UserWarning)  # Pillow: palette + tRNS bytes
MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


# ---- reference pipeline (docs/model.md §4, as the reference's Python does it) -----------------

def find_closest_aspect_ratio(aspect_ratio, target_ratios, width, height, image_size):
    best_ratio_diff = float("inf")
    best_ratio = (1, 1)
    area = width * height
    for ratio in target_ratios:
        target_aspect_ratio = ratio[0] / ratio[1]
        ratio_diff = abs(aspect_ratio - target_aspect_ratio)
        if ratio_diff < best_ratio_diff:
            best_ratio_diff = ratio_diff
            best_ratio = ratio
        elif ratio_diff == best_ratio_diff:
            if area > 0.5 * image_size * image_size * ratio[0] * ratio[1]:
                best_ratio = ratio
    return best_ratio


def dynamic_preprocess(image, min_num=1, max_num=12, image_size=448, use_thumbnail=True):
    orig_width, orig_height = image.size
    aspect_ratio = orig_width / orig_height
    target_ratios = set(
        (i, j) for n in range(min_num, max_num + 1) for i in range(1, n + 1)
        for j in range(1, n + 1) if i * j <= max_num and i * j >= min_num)
    target_ratios = sorted(target_ratios, key=lambda x: x[0] * x[1])
    ratio = find_closest_aspect_ratio(aspect_ratio, target_ratios, orig_width, orig_height,
                                      image_size)
    target_width = image_size * ratio[0]
    target_height = image_size * ratio[1]
    blocks = ratio[0] * ratio[1]
    resized_img = image.resize((target_width, target_height))
    tiles = []
    for i in range(blocks):
        box = ((i % (target_width // image_size)) * image_size,
               (i // (target_width // image_size)) * image_size,
               ((i % (target_width // image_size)) + 1) * image_size,
               ((i // (target_width // image_size)) + 1) * image_size)
        tiles.append(resized_img.crop(box))
    if use_thumbnail and len(tiles) != 1:
        tiles.append(image.resize((image_size, image_size)))
    return ratio, tiles


def open_rgb(path):
    """Image.open(..).convert("RGB"), except 16-bit gray keeps its high byte
    (Pillow opens it as mode "I" and clips to white; mmmamba does not copy that)."""
    img = Image.open(path)
    if img.mode in ("I", "I;16", "I;16B") and img.format == "PNG":
        hi = (np.asarray(img).astype(np.uint32) >> 8).astype(np.uint8)
        return Image.fromarray(hi, "L").convert("RGB")
    return img.convert("RGB")


def reference(path, max_tiles):
    img = open_rgb(path)
    ratio, tiles = dynamic_preprocess(img, max_num=max_tiles, image_size=S)
    u8 = np.stack([np.asarray(t, dtype=np.uint8) for t in tiles])  # N,S,S,3
    return ratio, u8


# ---- a small PNG encoder (Pillow cannot write interlaced or 16-bit colour PNGs) ------------

ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
         (0, 1, 1, 2)]


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def pack_rows(a, depth):
    h, w, c = a.shape
    if depth == 16:
        rows = a.astype(">u2").reshape(h, w * c).view(np.uint8)
    elif depth == 8:
        rows = a.astype(np.uint8).reshape(h, w * c)
    else:
        per = 8 // depth
        padw = -(-w // per) * per
        p = np.zeros((h, padw), np.uint8)
        p[:, :w] = a.reshape(h, w)
        p = p.reshape(h, padw // per, per)
        rows = np.zeros((h, padw // per), np.uint8)
        for k in range(per):
            rows |= (p[:, :, k] << (8 - depth * (k + 1))).astype(np.uint8)
    filt = np.zeros((h, 1), np.uint8)
    return np.concatenate([filt, rows], axis=1).tobytes()


def png_bytes(samples, ctype, depth, palette=None, trns=None, interlace=False, dims=None):
    h, w = samples.shape[:2]
    if not interlace:
        raw = pack_rows(samples, depth)
    else:
        raw = b"".join(pack_rows(samples[y0::dy, x0::dx], depth)
                       for x0, y0, dx, dy in ADAM7
                       if samples[y0::dy, x0::dx].size)
    W, H = dims or (w, h)
    out = b"\x89PNG\r\n\x1a\n" + png_chunk(
        b"IHDR", struct.pack(">IIBBBBB", W, H, depth, ctype, 0, 0, 1 if interlace else 0))
    if palette is not None:
        out += png_chunk(b"PLTE", bytes(palette))
    if trns is not None:
        out += png_chunk(b"tRNS", trns)
    return out + png_chunk(b"IDAT", zlib.compress(raw, 6)) + png_chunk(b"IEND", b"")


# ---- image content ------------------------------------------------------------------------

def photo(rng, w, h):
    """Smooth gradients, blobs, hard edges and noise: exercises rounding and clamping."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    fx, fy = x / max(w, 1), y / max(h, 1)
    r = 128 + 100 * np.sin(6.1 * fx + 2.3 * fy) * np.cos(3.7 * fy)
    g = 128 + 110 * np.cos(4.3 * fx * fy + 1.1)
    b = 255 * fx * (1 - fy)
    img = np.stack([r, g, b], axis=-1)
    cx, cy = rng.uniform(0, w), rng.uniform(0, h)
    img[(x - cx) ** 2 + (y - cy) ** 2 < (0.15 * (w + h)) ** 2] = (250, 10, 20)
    img[(x.astype(np.int64) // max(1, w // 7) + y.astype(np.int64) // max(1, h // 5)) % 7 == 0] = 0
    img += rng.normal(0, 12, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def jpeg_bytes(arr, mode="RGB", **kw):
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, "JPEG", **kw)
    return buf.getvalue()


def many_scans_jpeg(prog, copies=2000):
    """A progressive JPEG whose last (refinement) scan is repeated: a cheap file
    that would cost a pass over the coefficients per copy (libjpeg only warns
    about the bogus progression; mmmamba refuses it, and bounds scans x pixels)."""
    sos = prog.rfind(b"\xff\xda")
    eoi = prog.rfind(b"\xff\xd9")
    return prog[:sos] + prog[sos:eoi] * copies + prog[eoi:]


def build_cases(rng, quick):
    """(name, bytes, max_tiles) for images that must match; (name, bytes) for bad ones."""
    good, bad = [], []

    def add(name, data, max_tiles=12):
        good.append((name, data, max_tiles))

    # sizes and aspect ratios (PNG RGB, lossless, so only the resize is under test)
    sizes = [(1, 1), (2, 1), (1, 2000), (3000, 5), (2000, 1), (5, 3000), (37, 53), (449, 449),
             (448, 448), (896, 448), (1000, 333), (640, 480), (900, 900), (1400, 1400),
             (447, 1), (3, 7), (1023, 767), (1344, 896), (2001, 999)]
    for w, h in sizes:
        add("rgb8-%dx%d.png" % (w, h), png_bytes(photo(rng, w, h), 2, 8))
    for mt in (1, 2, 6, 24, 40):
        add("rgb8-777x333-max%d.png" % mt, png_bytes(photo(rng, 777, 333), 2, 8), mt)

    add("dataurl-rgb8-50x70.png", png_bytes(photo(rng, 50, 70), 2, 8))

    # every PNG colour type and bit depth, plain and interlaced
    w, h = 301, 187
    base = photo(rng, w, h)
    gray = base.mean(axis=-1).astype(np.uint16)
    for inter in (False, True):
        sfx = "-i" if inter else ""
        for d in (1, 2, 4, 8):
            v = (gray >> (8 - d))[..., None]
            add("gray%d%s.png" % (d, sfx), png_bytes(v, 0, d, interlace=inter))
            n = 1 << d
            pal = rng.integers(0, 256, size=3 * n, dtype=np.uint8)
            add("pal%d%s.png" % (d, sfx),
                png_bytes(v, 3, d, palette=pal, trns=bytes(range(0, 256, 256 // n))[:n],
                          interlace=inter))
        g16 = (gray.astype(np.uint32) * 257 // 2 + rng.integers(0, 200, gray.shape))
        g16 = np.where(rng.random(gray.shape) < 0.3, gray, g16).astype(np.uint16)[..., None]
        add("gray16%s.png" % sfx, png_bytes(g16, 0, 16, trns=struct.pack(">H", 7), interlace=inter))
        add("gray8-trns%s.png" % sfx,
            png_bytes(gray[..., None], 0, 8, trns=struct.pack(">H", 100), interlace=inter))
        a = rng.integers(0, 256, (h, w, 1), dtype=np.uint16)
        add("ga8%s.png" % sfx, png_bytes(np.concatenate([gray[..., None], a], -1), 4, 8,
                                         interlace=inter))
        ga16 = np.concatenate([gray[..., None] * 257 + 3, a * 257], -1)
        add("ga16%s.png" % sfx, png_bytes(ga16, 4, 16, interlace=inter))
        add("rgb8%s.png" % sfx, png_bytes(base, 2, 8, trns=struct.pack(">HHH", 1, 2, 3),
                                          interlace=inter))
        rgb16 = base.astype(np.uint16) * 257 + rng.integers(0, 256, base.shape).astype(np.uint16)
        rgb16 = np.minimum(rgb16, 65535)
        add("rgb16%s.png" % sfx, png_bytes(rgb16, 2, 16, interlace=inter))
        rgba = np.concatenate([base, rng.integers(0, 256, (h, w, 1), dtype=np.uint8)], -1)
        add("rgba8%s.png" % sfx, png_bytes(rgba, 6, 8, interlace=inter))
        add("rgba16%s.png" % sfx, png_bytes(rgba.astype(np.uint16) * 257, 6, 16, interlace=inter))
    # a short palette: indices past its end take Pillow's gray ramp
    idx = (gray >> 4)[..., None]
    add("pal4-short.png", png_bytes(idx, 3, 8, palette=bytes(range(30))))
    # Pillow itself as an encoder too
    for mode in ("RGB", "RGBA", "L", "LA", "P", "1", "I;16"):
        buf = io.BytesIO()
        im = Image.fromarray(base)
        im = im.convert(mode) if mode != "I;16" else Image.fromarray(
            (gray.astype(np.uint16) * 200).astype(np.uint16))
        im.save(buf, "PNG")
        add("pil-%s.png" % mode.replace(";", ""), buf.getvalue())

    # JPEG kinds
    add("jpeg-baseline.jpg", jpeg_bytes(base, quality=85))
    add("jpeg-444.jpg", jpeg_bytes(base, quality=95, subsampling=0))
    add("jpeg-422.jpg", jpeg_bytes(base, quality=90, subsampling=1))
    add("jpeg-progressive.jpg", jpeg_bytes(base, quality=80, progressive=True))
    add("jpeg-gray.jpg", jpeg_bytes(base, "L", quality=90))
    add("jpeg-gray-progressive.jpg", jpeg_bytes(base, "L", quality=90, progressive=True))
    add("jpeg-cmyk.jpg", jpeg_bytes(base, "CMYK", quality=90))
    add("jpeg-1x1.jpg", jpeg_bytes(photo(rng, 1, 1)))
    add("jpeg-17x3.jpg", jpeg_bytes(photo(rng, 17, 3)))
    add("jpeg-3x1999.jpg", jpeg_bytes(photo(rng, 3, 1999), progressive=True))
    big = (4000, 3000) if not quick else (1600, 1200)
    add("photo-%dx%d.jpg" % big, jpeg_bytes(photo(rng, *big), quality=90))

    # corrupt and hostile inputs
    jpg = jpeg_bytes(base, quality=85)
    png = png_bytes(base, 2, 8)
    bad.append(("empty.png", b""))
    bad.append(("random.bin", rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()))
    bad.append(("jpeg-truncated.jpg", jpg[: len(jpg) // 2]))
    bad.append(("jpeg-progressive-truncated.jpg",
                jpeg_bytes(base, progressive=True)[:1500]))
    bad.append(("jpeg-soi-only.jpg", b"\xff\xd8\xff"))
    bad.append(("jpeg-garbage.jpg", b"\xff\xd8\xff" + rng.integers(0, 256, 3000,
                                                              dtype=np.uint8).tobytes()))
    # lying SOF dimensions: 60000 x 60000 and 8000 x 8000 (64 Mpx), tiny data
    for dim in (60000, 8000):
        i = jpg.find(b"\xff\xc0")
        lie = bytearray(jpg)
        struct.pack_into(">HH", lie, i + 5, dim, dim)
        bad.append(("jpeg-lying-%d.jpg" % dim, bytes(lie)))
    bad.append(("png-truncated.png", png[: len(png) // 2]))
    bad.append(("png-header-only.png", png[:33]))
    bad.append(("png-100000x100000.png",
                png_bytes(np.zeros((1, 1, 3), np.uint8), 2, 8, dims=(100000, 100000))))
    bad.append(("png-lying-small-data.png",
                png_bytes(np.zeros((4, 4, 3), np.uint8), 2, 8, dims=(3000, 3000))))
    bad.append(("png-zero-width.png",
                png_bytes(np.zeros((4, 4, 3), np.uint8), 2, 8, dims=(0, 4))))
    crc = bytearray(png)
    crc[30] ^= 0xFF  # inside IHDR: CRC mismatch on a critical chunk
    bad.append(("png-bad-crc.png", bytes(crc)))
    ihdr = bytearray(png[8:33])  # length, type, data, CRC of IHDR
    ihdr[16] = 3  # bit depth 3 does not exist
    ihdr[21:25] = struct.pack(">I", zlib.crc32(bytes(ihdr[4:21])) & 0xFFFFFFFF)
    bad.append(("png-bad-depth.png", png[:8] + bytes(ihdr) + png[33:]))
    bad.append(("jpeg-many-scans.jpg", many_scans_jpeg(jpeg_bytes(base, progressive=True))))
    bad.append(("jpeg-repeated-refinement.jpg",
                many_scans_jpeg(jpeg_bytes(base, progressive=True), copies=100)))
    gif = io.BytesIO()
    Image.fromarray(base).save(gif, "GIF")
    bad.append(("image.gif", gif.getvalue()))
    return good, bad


# ---- driver -------------------------------------------------------------------------------

def run_mmmamba(exe, path, out, max_tiles, as_data_url=False):
    arg = path
    if as_data_url:
        with open(path, "rb") as f:
            arg = "data:image/png;base64," + base64.b64encode(f.read()).decode()
    cmd = [exe, "preprocess", arg, "--out", out, "--time"]
    if max_tiles != 12:
        cmd += ["--max-tiles", str(max_tiles)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mmmamba", required=True)
    ap.add_argument("--keep", help="write the images here and keep them")
    ap.add_argument("--quick", action="store_true", help="smaller photo")
    args = ap.parse_args()
    exe = os.path.abspath(args.mmmamba)
    work = args.keep or tempfile.mkdtemp(prefix="mmimg.")
    os.makedirs(work, exist_ok=True)
    rng = np.random.default_rng(20240601)
    good, bad = build_cases(rng, args.quick)
    failures = 0
    max_err = 0
    exact = 0
    out = os.path.join(work, "tiles.bin")
    try:
        for name, data, max_tiles in good:
            path = os.path.join(work, name)
            with open(path, "wb") as f:
                f.write(data)
            (cols, rows), ref = reference(path, max_tiles)
            r = run_mmmamba(exe, path, out, max_tiles, as_data_url=name.startswith("dataurl-"))
            if r.returncode != 0:
                print("FAIL %s: exit %d: %s" % (name, r.returncode, r.stderr.strip()))
                failures += 1
                continue
            got_grid = r.stdout.split()
            want_grid = [str(cols), str(rows), str(len(ref))]
            if got_grid != want_grid:
                print("FAIL %s: grid %s, reference %s" % (name, got_grid, want_grid))
                failures += 1
                continue
            tiles = np.fromfile(out, dtype="<f4")
            if tiles.size != ref.size:
                print("FAIL %s: %d floats, expected %d" % (name, tiles.size, ref.size))
                failures += 1
                continue
            tiles = tiles.reshape(len(ref), 3, S, S)
            # the reference's normalisation in fp32, then the error in 8-bit units
            want = (ref.astype(np.float32) / np.float32(255.0) - MEAN) / STD  # N,S,S,3
            want = want.transpose(0, 3, 1, 2)
            err8 = np.abs(tiles - want) * STD[None, :, None, None] * 255.0
            e = float(err8.max())
            max_err = max(max_err, e)
            # back to 8 bits: exact equality is the goal
            back = np.rint((tiles * STD[None, :, None, None] + MEAN[None, :, None, None]) * 255)
            same = np.array_equal(back.astype(np.int64), ref.transpose(0, 3, 1, 2))
            exact += same
            status = "ok" if e <= 1.0 else "FAIL"
            if e > 1.0:
                failures += 1
            t = r.stderr.strip().split("\n")[-1] if "photo" in name else ""
            print("%s %s: grid %sx%s, %d tiles, max err %.4g (8-bit units)%s %s"
                  % (status, name, cols, rows, len(ref), e, "" if same else ", not exact", t))
        for name, data in bad:
            path = os.path.join(work, name)
            with open(path, "wb") as f:
                f.write(data)
            r = run_mmmamba(exe, path, out, 12)
            msg = r.stderr.strip()
            if r.returncode == 1 and msg.startswith("mmmamba: ") and len(msg) > 12:
                print("ok %s refused: %s" % (name, msg))
            else:
                print("FAIL %s: exit %d (want 1 with a message): %r" % (name, r.returncode, msg))
                failures += 1
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print("%d images compared (%d exact in 8 bits), %d bad inputs; max error %.4g (8-bit units); "
          "%d failures" % (len(good), exact, len(bad), max_err, failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
