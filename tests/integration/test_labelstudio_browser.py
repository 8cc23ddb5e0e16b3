"""A task pre-annotated by the ITJNER ML backend, opened in Label Studio's own editor in chromium (Playwright): the
spans are drawn over the text. Screenshot to artifacts/ (UPDATE_SCREENSHOT=1 also writes docs/labelstudio.png)."""
from __future__ import annotations

import base64
import os
import shutil

import pytest

from fixtures.labelstudio_server import LS_PASSWORD, LS_USER
from fixtures.paths import EXAMPLES, REPO

from fixtures.browser import ARGS, CHROMIUM, need_browser
from test_labelstudio_backend import TEXTS, _connect, _retrieve, backend  # noqa: F401 (fixture)

pytestmark = [pytest.mark.labelstudio, pytest.mark.browser, pytest.mark.slow]


@pytest.fixture()
def checkpoint():
    """The embedded Twitter-2017 checkpoint: real spans for the screenshot."""
    return REPO / "assets" / "itjner-lite-twitter2017"


def test_a_pre_annotated_task_shows_its_spans_in_the_editor(ls_server, ls_client, ls_project, backend):  # noqa: F811
    need_browser()
    from playwright.sync_api import sync_playwright

    _connect(ls_client, ls_project, backend)
    photo = "data:image/jpeg;base64," + base64.b64encode((EXAMPLES / "stage.jpg").read_bytes()).decode()
    ls_client.import_tasks(ls_project, [{"data": {"text": t, "image": photo, "image_id": f"b{i}"}}
                                        for i, t in enumerate(TEXTS)])
    tasks = _retrieve(ls_client, ls_project)
    task = max(tasks, key=lambda t: len(t["predictions"][0]["result"]))
    spans = [r["value"]["text"] for r in task["predictions"][0]["result"]]
    assert spans
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.goto(f"{ls_server.url}/user/login/")
        page.fill("input[name=email]", LS_USER)
        page.fill("input[name=password]", LS_PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_load_state("networkidle", timeout=60_000)
        page.goto(f"{ls_server.url}/projects/{ls_project}/data?task={task['id']}")
        page.wait_for_selector(".htx-highlight", timeout=90_000)
        drawn = page.eval_on_selector_all(".htx-highlight", "els => els.map(e => e.textContent)")
        out = REPO / "artifacts" / "labelstudio-preannotated.png"
        out.parent.mkdir(exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()
    for span in spans:
        assert any(span in d or d in span for d in drawn), (span, drawn)
    if os.environ.get("UPDATE_SCREENSHOT"):
        shutil.copy(out, REPO / "docs" / "labelstudio.png")
