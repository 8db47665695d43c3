"""engine.images: every kind of image file becomes upright RGB, or a BadInput naming it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from photos import jpeg_bytes, write_grey_jpeg, write_solid_png
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
