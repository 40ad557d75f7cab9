"""The studio in headless Chromium (Debian's, driven by Playwright) against a real `midilm serve`: type a
prompt, generate, see the piano roll, play, download the MIDI, keep the history, and analyze an upload."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")

from midilm.generate.cli import default_model_path  # noqa: E402
from midilm.music.examples import example_piece  # noqa: E402
from midilm.music.midi_io import read_midi, write_midi  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def studio(request):
    if not CHROMIUM:
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh --all installs it)")
    if not default_model_path().is_dir():
        pytest.skip("the shipped text-to-MIDI model is not in this install")
    url = request.getfixturevalue("serve_url")  # the real server, shared with tests/test_serve.py
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM,
                                    args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"])
        try:
            yield browser, url
        finally:
            browser.close()


def test_compose_play_download_and_history(studio, tmp_path):
    browser, url = studio
    page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: errors.append(f"outside request {r.url}")
            if not r.url.startswith((url, "blob:", "data:")) else None)
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok")
    assert "midilm-t2m-tiny" in page.inner_text("#model-status")
    page.get_by_role("button", name="piano", exact=True).click()  # instruments are toggle chips
    page.fill("#prompt", "A gentle lullaby for piano at 80 bpm")
    page.fill("#max-tokens", "45")
    page.dispatch_event("#max-tokens", "input")
    page.fill("#seed", "17")
    page.press("#prompt", "Control+Enter")  # the keyboard shortcut generates

    canvas = page.wait_for_selector("#results .group[data-id] canvas.pianoroll[data-notes]", timeout=60_000)
    notes = int(canvas.get_attribute("data-notes"))
    assert notes > 0
    # the roll is drawn: the canvas holds coloured pixels, not only the background
    lit = page.evaluate("""() => {
        const c = document.querySelector('#results canvas.pianoroll');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 100 || d[i + 1] > 100) n++; return n; }""")
    assert lit > 50
    assert "Acoustic Grand Piano" in page.inner_text("#results .take .legend")

    page.click("#results .take .play")
    page.wait_for_selector('#results .take .play[data-state="playing"]', timeout=30_000)
    page.wait_for_function("() => !document.querySelector('#results .playhead').hidden", timeout=10_000)
    page.keyboard.press("Escape")  # stops playback
    page.wait_for_selector('#results .take .play[data-state="paused"]')

    with page.expect_download() as info:
        page.click("#results .take .act-download")
    saved = tmp_path / info.value.suggested_filename
    info.value.save_as(saved)
    assert saved.suffix == ".mid"
    piece = read_midi(saved)
    assert len(piece) == notes and set(piece.program.tolist()) == {0}

    # history survives a reload and restores the prompt and settings
    page.reload()
    page.wait_for_selector("#history button[data-id]")
    page.click("#history button[data-id]")
    assert page.input_value("#prompt") == "A gentle lullaby for piano at 80 bpm"
    assert page.input_value("#seed") == "17"
    page.wait_for_selector("#results .group[data-id] canvas.pianoroll[data-notes]")
    page.hover("#history li")
    page.click("#history .h-delete")
    assert page.query_selector_all("#history button[data-id]") == []
    assert not errors, errors


def test_bad_request_shows_a_toast(studio):
    browser, url = studio
    page = browser.new_page()
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok")
    page.fill("#prompt", "")
    page.click("#generate")
    assert "Write a prompt first" in page.wait_for_selector(".toast.error").inner_text()


def test_upload_gives_analysis_caption_and_answers(studio, tmp_path):
    browser, url = studio
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(url + "/")
    page.wait_for_selector("#model-status.ok")
    available = "understanding" in page.inner_text("#model-status")
    page.click("#tab-analyze")
    path = write_midi(example_piece(), tmp_path / "example.mid")
    page.set_input_files("#file", str(path))
    page.wait_for_selector("#analysis-take canvas.pianoroll[data-notes]")
    assert int(page.get_attribute("#analysis-take canvas.pianoroll", "data-notes")) == len(example_piece())
    facts = page.inner_text("#facts")
    assert "C major" in facts and "100 bpm" in facts
    if available:
        page.wait_for_selector("#caption.ready", timeout=60_000)
        assert len(page.inner_text("#caption").split()) >= 3
        page.fill("#question", "What key is this piece in?")
        page.press("#question", "Enter")
        answer = page.wait_for_selector(".bubble.a:not(.pending)", timeout=60_000)
        assert answer.inner_text().strip()
        page.select_option("#caption-source", "analysis")
    else:  # without the understanding model the studio answers from the analysis
        assert page.input_value("#caption-source") == "analysis"
    # from the analysis: the caption and answers state the measured facts
    page.wait_for_function("() => document.querySelector('#caption').textContent.includes('4/4 time')",
                           timeout=30_000)
    assert "in C major" in page.inner_text("#caption") and "ready" in page.get_attribute("#caption", "class")
    page.fill("#question", "What is the time signature?")
    page.press("#question", "Enter")
    page.wait_for_function("() => [...document.querySelectorAll('.bubble.a:not(.pending)')]"
                           ".some((b) => b.textContent.includes('4/4'))", timeout=30_000)


def test_bad_upload_shows_an_error(studio, tmp_path):
    browser, url = studio
    page = browser.new_page()
    page.goto(url + "/")
    page.click("#tab-analyze")
    bad = Path(tmp_path / "notes.mid")
    bad.write_text("these are not MIDI bytes")
    page.set_input_files("#file", str(bad))
    assert "not a readable MIDI file" in page.wait_for_selector(".toast.error").inner_text()


def test_api_docs_render_from_local_files(studio):
    browser, url = studio
    page = browser.new_page()
    outside: list[str] = []
    page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url) else None)
    page.goto(url + "/docs")
    page.wait_for_selector(".opblock", timeout=30_000)
    labels = page.inner_text(".swagger-ui")
    for path in ("/v1/generate", "/v1/continue", "/v1/describe", "/v1/ask", "/v1/models", "/healthz"):
        assert path in labels
    assert not outside, outside  # nothing from a CDN: the docs work offline
