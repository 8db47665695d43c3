"""engine.images: every kind of image file becomes upright RGB, or a BadInput naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from photos import (
    bmp_header,
    jpeg_bytes,
    png_bytes,
    progressive_jpeg_header,
    solid_gif,
    webp_header,
    write_grey_jpeg,
    write_solid_png,
)
from PIL import Image

from engine.errors import BadInput
from engine.images import (
    as_rgb_array,
    decode_min_side,
    expand_image_paths,
    iter_images,
)

REPO = Path(__file__).resolve().parents[1]
RED, BLUE = (220, 20, 20), (20, 20, 220)


def halves(width: int = 64, height: int = 32) -> Image.Image:
    """Left half red, right half blue: orientation mistakes show."""
    array = np.zeros((height, width, 3), dtype=np.uint8)
    array[:, : width // 2] = RED
    array[:, width // 2 :] = BLUE
    return Image.fromarray(array)


def save(image: Image.Image, path: Path, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


def close_to(pixel: np.ndarray, colour: tuple[int, ...], tolerance: int = 12) -> bool:
    return bool(np.all(np.abs(pixel.astype(int) - np.array(colour)) <= tolerance))


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".gif", ".bmp", ".webp"])
def test_every_supported_format_decodes_to_rgb(tmp_path: Path, suffix: str) -> None:
    path = save(halves(), tmp_path / f"halves{suffix}")
    array = as_rgb_array(path, "item")
    assert array.dtype == np.uint8 and array.shape == (32, 64, 3)
    assert close_to(array[16, 5], RED, 30) and close_to(array[16, 60], BLUE, 30)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = save(halves(), tmp_path / "rotated.jpg", exif=exif.tobytes())
    array = as_rgb_array(path, "item")
    assert array.shape == (64, 32, 3)
    assert close_to(array[5, 16], RED, 30) and close_to(array[60, 16], BLUE, 30)


def test_exif_orientation_survives_reduced_decoding(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 8
    path = save(halves(2048, 1024), tmp_path / "big-rotated.jpg", exif=exif.tobytes())
    array = as_rgb_array(path, "item", min_side=200)
    assert array.shape[0] > array.shape[1] and min(array.shape[:2]) >= 200
    assert close_to(array[-5, array.shape[1] // 2], RED, 30)


def test_grey_palette_cmyk_and_16_bit_images_become_rgb(tmp_path: Path) -> None:
    grey = as_rgb_array(save(Image.new("L", (8, 8), 77), tmp_path / "g.png"), "g")
    assert (grey == 77).all()
    palette = halves().quantize(4)
    pal = as_rgb_array(save(palette, tmp_path / "p.png"), "p")
    assert close_to(pal[16, 5], RED) and close_to(pal[16, 60], BLUE)
    cmyk = as_rgb_array(save(halves().convert("CMYK"), tmp_path / "c.jpg"), "c")
    assert close_to(cmyk[16, 5], RED, 30) and close_to(cmyk[16, 60], BLUE, 30)
    deep = Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16))
    assert (as_rgb_array(save(deep, tmp_path / "d.png"), "d") == 255).all()


def test_transparency_is_composited_on_white(tmp_path: Path) -> None:
    rgba = halves().convert("RGBA")
    pixels = np.array(rgba)
    pixels[:, :32, 3] = 0  # red half fully transparent
    path = save(Image.fromarray(pixels, "RGBA"), tmp_path / "alpha.png")
    array = as_rgb_array(path, "item")
    assert close_to(array[16, 5], (255, 255, 255), 0) and close_to(array[16, 60], BLUE, 0)
    transparent_gif = save(Image.new("P", (4, 4), 0), tmp_path / "t.gif", transparency=0)
    assert (as_rgb_array(transparent_gif, "gif") == 255).all()


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (8, 8), RED), Image.new("RGB", (8, 8), BLUE)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50)
    assert close_to(as_rgb_array(path, "item")[4, 4], RED, 30)


def test_arrays_bytes_and_pil_images_are_accepted() -> None:
    grey = np.full((5, 6), 9, dtype=np.uint8)
    assert as_rgb_array(grey, "a").shape == (5, 6, 3)
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    assert (as_rgb_array(rgba, "a") == 255).all()
    assert (as_rgb_array(np.ones((2, 2, 3)), "a") == 255).all()
    assert as_rgb_array(jpeg_bytes(np.zeros((8, 8, 3), np.uint8)), "b").shape == (8, 8, 3)
    assert as_rgb_array(halves(), "pil").shape == (32, 64, 3)
    for bad in (np.zeros((2, 2, 2)), np.full((2, 2), 2.0), np.zeros((0, 4, 3), np.uint8)):
        with pytest.raises(BadInput, match=r"^a: "):
            as_rgb_array(bad, "a")


def make_bad_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, a word the error must contain)."""
    photo = jpeg_bytes(np.asarray(halves(256, 256)))
    files = {
        "truncated": (photo[: len(photo) // 2], "truncated"),
        "corrupt": (bytes(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8)),
                    "not an image"),
        "empty": (b"", "empty"),
        "text": (b"hello, this is not a picture\n" * 20, "not an image"),
        "bad-body": (photo[:600] + b"\x00" * 3000, "image data"),
    }
    out = {}
    for name, (data, reason) in files.items():
        path = folder / f"{name}.jpg"
        path.write_bytes(data)
        out[name] = (path, reason)
    return out


def test_bad_files_raise_bad_input_naming_the_path_and_reason(tmp_path: Path) -> None:
    for path, reason in make_bad_files(tmp_path).values():
        with pytest.raises(BadInput) as caught:
            as_rgb_array(path, str(path))
        assert str(caught.value).startswith(str(path)) and reason in str(caught.value)
    with pytest.raises(BadInput, match="cannot read"):
        as_rgb_array(tmp_path / "missing.jpg", "missing")


def test_iter_images_keeps_order_and_reports_bad_files_without_stopping(tmp_path: Path) -> None:
    bad = make_bad_files(tmp_path)
    good = [save(Image.new("RGB", (16, 16), (i * 40, 0, 0)), tmp_path / f"ok{i}.png")
            for i in range(5)]
    paths = [good[0], bad["truncated"][0], good[1], bad["empty"][0], *good[2:], bad["text"][0]]
    results = list(iter_images(paths, workers=3, prefetch=2))
    assert [r.path for r in results] == paths
    assert [r.error is None for r in results] == [True, False, True, False, True, True, True,
                                                  False]
    assert [int(r.array[0, 0, 0]) for r in results if r.array is not None] == [0, 40, 80, 120,
                                                                                 160]
    assert results[1].error.startswith("truncated image data")
    assert results[3].error == f"{bad['empty'][0]} is an empty file"


def test_iter_images_decodes_ahead_of_a_slow_consumer(tmp_path: Path) -> None:
    paths = [save(halves(), tmp_path / f"{i}.png") for i in range(12)]
    pulled = []

    def source():
        for path in paths:
            pulled.append(path)
            yield path

    images = iter_images(source(), workers=2, prefetch=6)
    first = next(images)
    assert first.error is None and len(pulled) >= 6  # queued before the consumer asked
    time.sleep(0.2)
    rest = list(images)
    assert len(rest) == 11 and all(r.error is None for r in rest)


def test_abandoning_iter_images_early_does_not_hang(tmp_path: Path) -> None:
    paths = [save(halves(), tmp_path / f"{i}.png") for i in range(20)]
    images = iter_images(paths, workers=2, prefetch=8)
    next(images)
    started = time.perf_counter()
    images.close()
    assert time.perf_counter() - started < 2


def test_expand_image_paths_walks_folders_and_globs_sorted_and_unique(tmp_path: Path) -> None:
    (tmp_path / "a" / "deep").mkdir(parents=True)
    for rel in ["a/x.JPG", "a/deep/y.png", "a/deep/z.webp", "a/notes.txt", "b.gif", "c.bmp"]:
        (tmp_path / rel).write_bytes(b"x")
    found = expand_image_paths([tmp_path / "a", str(tmp_path / "*.gif"), tmp_path / "a/x.JPG",
                                str(tmp_path / "**" / "*.png")])
    names = [p.relative_to(tmp_path).as_posix() for p in found]
    assert names == sorted(names) == ["a/deep/y.png", "a/deep/z.webp", "a/x.JPG", "b.gif"]
    assert all(p.is_absolute() for p in found)
    assert expand_image_paths([tmp_path / "a/notes.txt"]) == [tmp_path / "a/notes.txt"]
    with pytest.raises(BadInput, match="no such file"):
        expand_image_paths([tmp_path / "nope"])
    with pytest.raises(BadInput, match="matches no files"):
        expand_image_paths([str(tmp_path / "*.tiff")])


def test_min_side_hint_shrinks_decoding_but_keeps_the_short_side() -> None:
    photo = jpeg_bytes(np.asarray(halves(2000, 1000)))
    array = as_rgb_array(photo, "big", min_side=300)
    assert 300 <= min(array.shape[:2]) < 600 and array.shape[1] == 2 * array.shape[0]
    assert as_rgb_array(photo, "big").shape == (1000, 2000, 3)


def test_decode_min_side_follows_the_encoders_input_size() -> None:
    class Encoder:
        image_size = 224

    assert decode_min_side(Encoder()) == 448
    assert decode_min_side(object()) is None


_MEASURE = """
import json, resource, sys, time
from PIL import Image
from engine.images import as_rgb_array
limit = Image.MAX_IMAGE_PIXELS
out = {}
for path in sys.argv[1:]:
    start = time.perf_counter()
    a = as_rgb_array(path, path, min_side=448)
    out[path] = [list(a.shape), int(a.min()), int(a.max()), time.perf_counter() - start]
out["limit_restored"] = Image.MAX_IMAGE_PIXELS == limit
try:  # VmHWM starts afresh at exec; ru_maxrss may carry the parent's size over a fork
    status = open("/proc/self/status").read()
    out["peak_mb"] = int(status.split("VmHWM:")[1].split()[0]) / 1024
except (OSError, IndexError):
    out["peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def test_a_20000_pixel_image_is_downscaled_without_exhausting_memory(tmp_path: Path) -> None:
    jpeg, png = tmp_path / "huge.jpg", tmp_path / "huge.png"
    write_grey_jpeg(jpeg, 20_000, 20_000)
    write_solid_png(png, 20_000, 20_000, pixel=b"\x60")  # 400 MB if decoded whole
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(jpeg), str(png)],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=True,
    )
    out = json.loads(run.stdout)
    assert out[str(jpeg)][:3] == [[500, 500, 3], 128, 128]
    shape, low, high, _ = out[str(png)]
    assert 448 <= shape[0] == shape[1] < 896 and low == high == 0x60
    assert out["limit_restored"]
    assert out["peak_mb"] < 250, out  # a full decode would need 400+ MB


_DECODE_IN_FRESH_PROCESS = """
import json, resource, sys, time
# An unbounded decode fails here instead of taking the host's memory.
resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
from engine.errors import BadInput
from engine.images import as_rgb_array, iter_images

def peak_mb():
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) / 1024

def outcome(array, error):
    if error is not None:
        return error
    return [list(array.shape), array[0, 0].tolist()]

out = {"base_mb": peak_mb()}
start = time.perf_counter()
if sys.argv[1] == "pool":
    for r in iter_images(sys.argv[2:], min_side=448, workers=4, prefetch=4):
        out.setdefault("results", []).append(outcome(r.array, r.error))
else:
    for path in sys.argv[2:]:
        try:
            out[path] = outcome(as_rgb_array(path, path, min_side=448), None)
        except BadInput as exc:
            out[path] = str(exc)
out["seconds"] = time.perf_counter() - start
out["peak_mb"] = peak_mb()
print(json.dumps(out))
"""


def decode_in_fresh_process(mode: str, *paths: Path) -> dict:
    """Decodes ``paths`` in a new interpreter; its own peak RSS (VmHWM) shows the cost."""
    run = subprocess.run(
        [sys.executable, "-c", _DECODE_IN_FRESH_PROCESS, mode, *map(str, paths)],
        capture_output=True, text=True, cwd=REPO, timeout=120,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout)
    out["cost_mb"] = out["peak_mb"] - out["base_mb"]
    return out


BOMBS = {  # tiny files declaring huge images, in every format and mode that decodes whole
    "lossless-16000.webp": lambda: webp_header(16_000, 16_000),  # 34 bytes, was 3.9 GB
    "transparent-16000.gif": lambda: solid_gif(16_000, 16_000),  # was 4.15 GB
    "rgb-16000.bmp": lambda: bmp_header(16_000, 16_000),
    "grey-16000.bmp": lambda: bmp_header(16_000, 16_000, bits=8),
    "progressive-30000.jpg": lambda: progressive_jpeg_header(30_000, 30_000),
    "16bit-20000.png": lambda: png_bytes(20_000, 20_000, depth=16, colour=2, rows=4),
    "interlaced-20000.png": lambda: png_bytes(20_000, 20_000, colour=0, interlace=1, rows=4),
    "bilevel-30000.png": lambda: png_bytes(30_000, 30_000, depth=1, colour=0, rows=4),
    "one-row-2^30.png": lambda: png_bytes(1 << 30, 1, colour=6, rows=0),
}


def test_images_too_large_to_decode_are_refused_before_any_pixel_is_read(tmp_path: Path) -> None:
    paths = []
    for name, make in BOMBS.items():
        paths.append(tmp_path / name)
        paths[-1].write_bytes(make())
    out = decode_in_fresh_process("query", *paths)
    for path in paths:
        assert isinstance(out[str(path)], str), f"{path.name} was decoded: {out[str(path)]}"
        assert out[str(path)].startswith(f"{path}: ") and "MiB to decode" in out[str(path)]
    assert out["cost_mb"] < 50 and out["seconds"] < 10, out


def test_large_palette_and_transparent_images_decode_a_strip_at_a_time(tmp_path: Path) -> None:
    """144 Mpx GIF with transparency: 144 MB of indices, not 2.3 GB of RGBA copies."""
    gif, png = tmp_path / "transparent-12000.gif", tmp_path / "palette-12000.png"
    gif.write_bytes(solid_gif(12_000, 12_000))
    png.write_bytes(png_bytes(12_000, 12_000))  # palette + tRNS, streamed at reduced size
    out = decode_in_fresh_process("query", gif, png)
    assert out[str(gif)] == [[462, 462, 3], [255, 255, 255]]  # fully transparent -> white
    assert out[str(png)][0] == [462, 462, 3]
    assert close_to(np.array(out[str(png)][1]), (142, 227, 142), 2)  # 50 % green on white
    assert out["cost_mb"] < 300, out


def test_the_decode_pool_holds_one_large_image_at_a_time(tmp_path: Path) -> None:
    """Four workers on four 121 Mpx GIFs: each fits the budget alone, two would not."""
    gif = tmp_path / "transparent-11000.gif"
    gif.write_bytes(solid_gif(11_000, 11_000))
    out = decode_in_fresh_process("pool", *[gif] * 4)
    assert out["results"] == [[[459, 459, 3], [255, 255, 255]]] * 4
    assert out["cost_mb"] < 300, out
