"""The demo on real photos in a real browser: the default checkpoint (text only) with a real photo shows the caption
the captioner writes for it and, per caption word, where the captioner looked; it shows no empty model panels.
Needs $ITJNER_FLICKR_DIR (see tests/fixtures/photos.py) and chromium."""
import pytest

from fixtures.browser import need_browser, running_app, shot
from fixtures.photos import flickr_test_photos

pytestmark = [pytest.mark.browser]


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from playwright.sync_api import sync_playwright

    from fixtures.browser import ARGS, CHROMIUM
    from itjner.checkpoints import DEFAULT_CHECKPOINT

    need_browser()
    flickr_test_photos(1)  # skip (or fail on CI) before starting anything
    with running_app(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp("photo-app")) as url:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.wait_for_selector("#predict-btn", timeout=60_000)
            yield page
            browser.close()


def test_a_real_photo_gets_a_caption_and_a_heatmap_per_caption_word(page):
    photo = flickr_test_photos(1)[0]
    page.locator("#image-in input[type=file]").set_input_files(str(photo))
    page.wait_for_selector("#image-in img", timeout=30_000)
    page.locator("#tweet-text textarea").fill("Great afternoon with the kids at Central Park in New York")
    page.locator("#predict-btn").click()
    page.wait_for_selector("#caption-heatmap img", timeout=90_000)
    caption = page.locator("#caption-out textarea").input_value()
    assert caption and not caption.startswith("(") and "<unk>" not in caption, caption
    assert "reads no captions" in caption  # said once, where the caption is
    page.locator("#caption-word input").click()
    words = page.get_by_role("option").all_inner_texts()
    assert len(words) >= 3, words
    before = page.locator("#caption-heatmap img").first.get_attribute("src")
    page.get_by_role("option", name=words[2]).click()
    page.wait_for_function("old => { const i = document.querySelector('#caption-heatmap img');"
                           " return i && i.getAttribute('src') !== old; }", arg=before, timeout=30_000)
    assert words[2].split(". ", 1)[1] in page.locator("#caption-heatmap-legend").inner_text()
    # a text-only model: no NER heatmap, no gate plot, no "no heatmap" note, and the status says why, once
    assert not page.locator("#heatmap").is_visible() and not page.locator("#gate-plot").is_visible()
    status = page.locator("#status").inner_text()
    assert status.count("does not influence") == 1
    shot(page, "real-photo-caption.png")
