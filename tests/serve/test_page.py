"""The clinicians' page in a real headless Chromium: key prompt, streamed chat, no HTML injection."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from sm70.serve.engines.handle import Event, Handle

from .conftest import LiveServer

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
INJECTION = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> **bold**'

pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason=f"no browser: {CHROMIUM} is not installed "
                                "(apt-get install chromium; .ci/run does)")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module", params=["transformers", "llama.cpp"])
def page_server(request):
    """The page in front of the transformers engine (tiny model) and of the device engine (SmolLM2 GGUF in
    the supervised llama-server)."""
    return request.getfixturevalue("server" if request.param == "transformers" else "gguf_server")


def test_page_asks_for_the_key_then_streams_a_reply(page_server, browser, tmp_path):
    server = page_server
    page = browser.new_page(bypass_csp=True)  # lets the test poll with JS; the page itself must not rely on CSP
    page.goto(server.url + "/")
    page.wait_for_selector("#key-form:not([hidden])")
    assert "not a certified medical device" in page.inner_text("#disclaimer")
    page.fill("#key", "sm70-000000000000-wrong")
    page.click("#key-form button")
    page.wait_for_selector("#key-error:not([hidden])")
    assert "not accepted" in page.inner_text("#key-error")
    page.fill("#key", server.key)
    page.click("#key-form button")
    page.wait_for_selector("#chat:not([hidden])")
    assert page.inner_text("#model") == "model"
    page.fill("#prompt", "What is the first-line treatment for anaphylaxis?")
    page.press("#prompt", "Enter")
    page.wait_for_function("document.querySelector('li.assistant') && !document.getElementById('send').disabled",
                           timeout=60_000)
    assert page.locator("li.user .text").inner_text() == "What is the first-line treatment for anaphylaxis?"
    assert page.evaluate("sessionStorage.getItem('sm70-key')") == server.key
    assert page.evaluate("localStorage.length") == 0
    assert page.locator("li.error").count() == 0
    shot = Path(os.environ.get("SM70_SCREENSHOT", tmp_path / "page.png"))
    page.screenshot(path=str(shot), full_page=True)
    page.close()


class ScriptedEngine:
    """Answers every request with one fixed reply, streamed in pieces: the page test needs a reply
    that contains markup, which the tiny model will not write on demand."""

    model_ids = ["scripted"]
    max_context = 4096

    def __init__(self, tokenizer, reply: str):
        self.tokenizer, self.reply = tokenizer, reply

    def submit(self, prompt_ids, params, model_id) -> Handle:
        handle = Handle(prompt_ids, params)
        for i in range(0, len(self.reply), 7):
            handle.emit(Event("delta", text=self.reply[i:i + 7]))
        handle.emit(Event("done", finish_reason="stop", prompt_tokens=len(prompt_ids),
                          completion_tokens=len(self.reply) // 7 + 1))
        return handle

    def snapshot(self):
        return {}

    def close(self):
        pass


def test_model_output_is_rendered_as_text_not_html(tiny_model, browser):
    from sm70.model.load import load_tokenizer
    from sm70.serve.api.app import build_app
    from sm70.serve.guard.auth import KeyStore
    from sm70.serve.api.serving import Service

    from sm70.config import load_config
    from sm70.serve.main import ServeConfig

    engine = ScriptedEngine(load_tokenizer(tiny_model), INJECTION)
    cfg = load_config(ServeConfig, model=str(tiny_model), auth="none", audit_log=None, log_level="warning")
    live = LiveServer(build_app(Service(engine), KeyStore(None), None, {}, open_access=True), engine, cfg)
    try:
        page = browser.new_page(bypass_csp=True)  # lets the test poll with JS; the page itself must not rely on CSP
        page.goto(live.url + "/")
        page.wait_for_selector("#chat:not([hidden])")      # no keys configured: straight to the chat
        page.fill("#prompt", "hello")
        page.click("#send")
        page.wait_for_function("!document.getElementById('send').disabled "
                               "&& document.querySelector('li.assistant .text').textContent.length > 0")
        assert page.locator("li.assistant .text").text_content() == INJECTION
        assert page.locator("#messages img, #messages script, #messages b").count() == 0
        assert page.evaluate("window.__pwned") is None
        page.close()
    finally:
        live.stop()
