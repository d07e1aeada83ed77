"""`tagger report`: the page's data, its thumbnails, wrong input, and the page driven in headless chromium.

The store comes from a real in-process scan with the colour model of generated videos: red until
3 s, grey until 6 s, then blue (10 s at 25 fps); a 6 s green video whose name is HTML; a 4 s grey
video, which gets no tags; and a file of random bytes, which fails. The last test scans real clips
from ../shared/data with the shipped models.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest

from browser import headless_chromium
from synthetic import BLUE, GREEN, GREY, RED, solid, timeline, write_video
from tagger.cli import app

HTML_NAME = '<img src=x onerror="alert(1)">\n&amp; \'q\''  # a newline and markup in a file name


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, colour_model):
    """(videos folder, db) after a real scan that tagged two videos and failed one."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("report") / "videos"
    root.mkdir()
    write_video(root / "red_grey_blue.avi", 10, colour_at=timeline((3, RED), (6, GREY), (99, BLUE)))
    write_video(root / f"{HTML_NAME}.avi", 6, colour_at=solid(GREEN))
    write_video(root / "grey.avi", 4, colour_at=solid(GREY))
    (root / "broken.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    db = root.parent / "tags.db"
    result = CliRunner().invoke(app, ["scan", str(root), "--db", str(db), "--model", str(colour_model), "-q"])
    assert result.exit_code == 3, result.output  # the random bytes fail, with their reason stored
    return root, db


@pytest.fixture(scope="module")
def report(scanned, tmp_path_factory):
    """The report folder of the scanned store, default settings."""
    from typer.testing import CliRunner

    root, db = scanned
    out = tmp_path_factory.mktemp("out") / "report"
    result = CliRunner().invoke(app, ["report", "--db", str(db), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert re.fullmatch(rf"wrote {re.escape(str(out))}/index.html in \d+\.\d s\n"
                        r"4 videos \(1 failed\), 3 segments, 3 thumbnails\n", result.stderr), result.stderr
    assert page_data(out)["summary"]["videos"] == 4  # the page's count, the same
    assert "<title>tagger report: 4 videos</title>" in (out / "index.html").read_text(encoding="utf-8")
    return out


def page_data(folder: Path) -> dict:
    """The JSON the page embeds."""
    page = (folder / "index.html").read_text(encoding="utf-8")
    (found,) = re.findall(r'<script type="application/json" id="report-data">(.*?)</script>', page, re.S)
    return json.loads(found)


def _decode_image(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def test_page_holds_summary_videos_segments_and_failures(scanned, report):
    root, _ = scanned
    data = page_data(report)
    assert data["labels"] == ["Blue", "Green", "Red"]
    assert data["summary"] == {"videos": 4, "tagged": 3, "failed": 1, "hours": round(20 / 3600, 3), "segments": 3}
    assert [row[:4] for row in data["per_label"]] == [["Blue", 1, 1, 4.0], ["Green", 1, 1, 6.0], ["Red", 1, 1, 3.0]]
    ((failed, reason),) = data["failures"]
    assert (failed, reason) == (str(root / "broken.mp4"), "not a video (no decodable video stream)")
    by_name = {Path(v["path"]).name: v for v in data["videos"]}
    assert sorted(by_name) == sorted([f"{HTML_NAME}.avi", "grey.avi", "red_grey_blue.avi"])
    video = by_name["red_grey_blue.avi"]
    assert (video["uri"], video["duration"], video["fps"], video["size"]) == (
        (root / "red_grey_blue.avi").as_uri(), 10.0, 25.0, "160x120")
    assert [s[:3] + [s[4]] for s in video["segments"]] == [[2, 0.0, 3.0, 0], [0, 6.0, 10.0, 0]]
    page = (report / "index.html").read_text(encoding="utf-8")
    assert "<img src=x" not in page and "alert(1)\">" not in page  # the file name is data, not markup


def test_thumbnails_are_the_segments_middle_frames(report):
    data = page_data(report)
    video = next(v for v in data["videos"] if v["path"].endswith("red_grey_blue.avi"))
    red, blue = video["segments"]
    assert red[5] and blue[5] and sorted(p.name for p in (report / "thumbs").iterdir()) == [
        "000000-0.jpg", "000002-0.jpg", "000002-1.jpg"]
    for segment, channel in ((red, 0), (blue, 2)):
        image = _decode_image((report / segment[5]).read_bytes())
        assert image.shape[:2] == (90, 120)  # 160x120 with the short side at 90
        means = image.reshape(-1, 3).mean(axis=0)
        assert means[channel] > 150 and np.delete(means, channel).max() < 90, (segment, means)


def test_no_thumbnails_decodes_nothing_and_clears_old_ones(scanned, runner, tmp_path):
    _, db = scanned
    (tmp_path / "thumbs").mkdir()
    (tmp_path / "thumbs" / "000000-0.jpg").write_bytes(b"old")
    result = runner.invoke(app, ["report", "--db", str(db), "-o", str(tmp_path), "--no-thumbnails"])
    assert result.exit_code == 0, result.output
    assert "3 segments, 0 thumbnails" in result.stderr
    assert list((tmp_path / "thumbs").iterdir()) == []
    assert all(s[5] is None for v in page_data(tmp_path)["videos"] for s in v["segments"])


def test_wrong_input_is_one_line(scanned, runner, tmp_path):
    _, db = scanned
    target = tmp_path / "report.html"
    target.write_text("mine", encoding="utf-8")
    result = runner.invoke(app, ["report", "--db", str(db), "-o", str(target)])
    assert (result.exit_code, result.stderr) == (
        2, f"Error: {target} is a file; the report is a folder (index.html and thumbs/): pass -o DIR\n")
    result = runner.invoke(app, ["report", "--db", str(db), "--thumbnails", "-1"])
    assert (result.exit_code, result.stderr) == (2, "Error: --thumbnails must be 0 or more, got -1\n")
    result = runner.invoke(app, ["report", "--db", str(tmp_path / "none.db"), "-o", str(tmp_path / "r")])
    assert result.exit_code == 5 and result.stderr.startswith("Error: no database at ")


def _visible(driver, selector: str) -> list:
    return [e for e in driver.find_elements("css selector", selector) if e.is_displayed()]


def _severe(driver) -> list[dict]:
    return [entry for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def test_page_in_headless_chromium_filters_and_draws_the_timeline(scanned, report, tmp_path):
    from selenium.webdriver.support.ui import Select, WebDriverWait

    with headless_chromium() as driver:
        driver.get((report / "index.html").as_uri())
        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        assert _severe(driver) == []
        assert driver.find_element("id", "count").text == "2 videos, 3 segments"
        assert _visible(driver, "#more") == []  # every video drawn: no "show more (0 left)" button
        names = [e.text for e in driver.find_elements("css selector", ".video h3 a")]
        assert names == [f"{HTML_NAME}.avi".replace("\n", " "), "red_grey_blue.avi"]  # shown as text, nothing run
        assert sorted(e.get_attribute("data-label") for e in _visible(driver, ".seg[data-label]")) == ["Blue", "Green", "Red"]
        driver.find_element("id", "f-tagged").click()  # untagged videos too
        assert driver.find_element("id", "count").text == "3 videos, 3 segments"
        assert [e.text for e in _visible(driver, ".video .none")] == ["no segments"]
        driver.find_element("id", "f-tagged").click()

        Select(driver.find_element("id", "f-label")).select_by_visible_text("Red")
        assert driver.find_element("id", "count").text == "1 video, 1 segment"
        (red,) = _visible(driver, ".track .seg")
        assert red.get_attribute("data-label") == "Red"
        assert red.get_attribute("href") == (scanned[0] / "red_grey_blue.avi").as_uri() + "#t=0,3"
        assert [e.get_attribute("data-label") for e in _visible(driver, ".thumb")] == ["Red"]
        assert driver.execute_script("return document.querySelector('.thumb img').naturalWidth") == 120

        driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", red)
        box = driver.execute_script("const r = arguments[0].getBoundingClientRect();"
                                    "const p = arguments[0].parentNode.getBoundingClientRect();"
                                    "return [r.left, r.top, r.width, r.height, p.left, p.width,"
                                    " getComputedStyle(arguments[0]).backgroundColor]", red)
        png = driver.get_screenshot_as_png()
        (tmp_path / "filtered.png").write_bytes(png)
        image = _decode_image(png)
        left, top, width, height, track_left, track_width, colour = box
        assert width == pytest.approx(track_width * 0.3, abs=1)  # 3 s of 10 s, drawn to scale
        assert left == pytest.approx(track_left, abs=1)
        expected = np.array([int(c) for c in re.findall(r"\d+", colour)[:3]])
        inside = image[int(top) + 3:int(top + height) - 3, int(left) + 3:int(left + width) - 3].reshape(-1, 3)
        assert len(inside) > 100 and (np.abs(inside - expected).max(axis=1) <= 3).mean() > 0.95, colour
        after = image[int(top + height / 2), int(left + width) + 5:int(track_left + track_width) - 5]
        assert (np.abs(after - expected).max(axis=1) > 40).all()  # the rest of the track is not the segment

        Select(driver.find_element("id", "f-label")).select_by_value("")
        driver.execute_script("const s = document.getElementById('f-score'); s.value = '1';"
                              "s.dispatchEvent(new Event('input'))")
        assert driver.find_element("id", "count").text == "0 videos, 0 segments"
        Select(driver.find_element("id", "f-evidence")).select_by_visible_text("heard")
        assert _visible(driver, ".seg[data-label]") == []
        assert _severe(driver) == []


@pytest.mark.slow
@pytest.mark.shipped_audio
def test_report_of_real_clips_loads_in_chromium(shared_data, runner, tmp_path):
    clips = [shared_data / "clips" / name for name in ("v_PlayingGuitar_g16_c02.avi", "maskvat.github.io__cello.mp4")]
    db = tmp_path / "tags.db"
    result = runner.invoke(app, ["scan", *map(str, clips), "--db", str(db), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["report", "--db", str(db), "-o", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    data = page_data(tmp_path / "report")
    assert {data["labels"][s[0]] for v in data["videos"] for s in v["segments"]} >= {"PlayingGuitar", "PlayingCello"}
    with headless_chromium() as driver:
        driver.get((tmp_path / "report" / "index.html").as_uri())
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(driver, 10).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")
        images = driver.find_elements("css selector", ".thumb img")
        assert images and all(driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", i)
                              for i in images)
        assert _severe(driver) == []
