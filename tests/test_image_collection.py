"""Image collections end to end: folders in, bad files skipped and reported, search by image."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from photos import augment, distinct_images
from PIL import Image

from engine.cli import cli


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    folder = tmp_path_factory.mktemp("catalogue")
    images = dict(list(distinct_images().items())[:12])
    (folder / "shelf").mkdir()
    for name, image in images.items():
        Image.fromarray(image).save(folder / "shelf" / f"{name}.jpg", quality=92)
    (folder / "shelf" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    (folder / "shelf" / "empty.png").write_bytes(b"")
    (folder / "meta.csv").write_text(
        "file,price\n" + "".join(f"shelf/{n}.jpg,{i}\n" for i, n in enumerate(images))
    )
    return folder, images


def test_cli_adds_a_folder_skips_bad_files_and_finds_augmented_copies(tmp_path, catalogue):
    folder, images = catalogue
    home = str(tmp_path / "home")
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(cli, ["--home", home, *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    run("create", "photos", "--encoder", "efficientnet")
    out = run(
        "add", "photos", str(folder / "shelf"), "--sidecar", str(folder / "meta.csv"), "--json"
    )
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["added"] == len(images) and summary["skipped"] == 2
    reasons = {item["item"].rsplit("/", 1)[-1]: item["reason"] for item in summary["skipped_items"]}
    assert set(reasons) == {"broken.jpg", "empty.png"} and "empty" in reasons["empty.png"]

    rng = np.random.default_rng(3)
    query = tmp_path / "query.jpg"
    name = "coffee"
    Image.fromarray(augment(images[name], rng)).save(query)
    hits = [
        json.loads(x)
        for x in run("search", "photos", "--image", str(query), "-k", "3", "--json").splitlines()
    ]
    assert hits[0]["id"] == f"{name}.jpg"  # the path inside the folder that was added
    assert hits[0]["metadata"] == {"price": list(images).index(name)}
    assert hits[0]["content"].endswith(f"shelf/{name}.jpg")


def test_python_api_stored_image_and_query_give_the_same_vector(engine, catalogue):
    folder, _ = catalogue
    col = engine.create("p", encoder="efficientnet")
    paths = sorted((folder / "shelf").glob("c*.jpg"))
    report = col.add(images=paths, ids=[p.stem for p in paths])
    assert report.added == len(paths)
    hit = col.search(image=paths[0], k=1)[0]
    assert hit.id == paths[0].stem and hit.score > 0.9999
    with pytest.raises(Exception, match="does not encode text"):
        col.search("a cup of coffee")


def test_image_bombs_are_skipped_by_add_and_refused_by_search(engine, catalogue, tmp_path):
    """A 34-byte WebP and a 2 MB GIF declaring 16,000 x 16,000 cost nothing, and say why."""
    from photos import solid_gif, webp_header

    from engine.errors import BadInput

    folder, _ = catalogue
    webp, gif = tmp_path / "bomb.webp", tmp_path / "bomb.gif"
    webp.write_bytes(webp_header(16_000, 16_000))
    gif.write_bytes(solid_gif(16_000, 16_000))
    good = sorted((folder / "shelf").glob("c*.jpg"))[0]
    col = engine.create("bombs", encoder="efficientnet")
    report = col.add(images=[good, webp, gif], ids=["good", "webp", "gif"])
    assert report.added == 1 and col.count() == 1
    reasons = dict(report.skipped)
    assert set(reasons) == {str(webp), str(gif)}
    assert all("MiB to decode" in reason for reason in reasons.values()), reasons
    with pytest.raises(BadInput, match=r"16000x16000 WEBP would take about \d+ MiB to decode"):
        col.search(image=webp.read_bytes(), k=1)
    assert col.search(image=good, k=1)[0].id == "good"
