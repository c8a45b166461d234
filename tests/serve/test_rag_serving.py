"""`sm70 serve ... rag=INDEX`: answers grounded in an index of real files (.md, .txt, .html, .jsonl, a PDF),
with citations, whole and streamed, through the transformers engine (tiny model) and through the gateway
in front of an engine that shows what it received; the nothing-relevant answer that asks no engine; the
audit line's fingerprint and chunk numbers (text only with audit_content, scrubbed); a wrong rag= path;
the citations on the page in Chromium."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

from sm70.cli import main
from sm70.config import load_config
from sm70.retrieval.index import IndexConfig, build_index
from sm70.serve.api.grounding import NO_SOURCE, Grounding
from sm70.serve.api.serving import DEFAULT_SYSTEM_PROMPT
from tests.retrieval.helpers import GOOD, make_docs

from .conftest import start_gateway, start_server
from .scripted_engine import ScriptedEngine
from .test_page import browser  # noqa: F401 (a fixture)

DIABETES = "What is the first-line drug for type 2 diabetes?"
ASTHMA = "Which drug relieves an acute asthma attack?"
NO_WORD = "What is the capital of Australia?"     # no indexed chunk shares a word with it
WEAK = "How do I treat a cold?"                    # shares only "treat" (tuberculosis, sepsis): under MIN_SCORE
PHONE = "617-555-0199"
MIN_SCORE = 1.0    # on this small corpus the questions above score 2 to 4, WEAK under 1
INJECTED = '<img src=x onerror="window.__pwned=1">'
FIELDS = {"n", "chunk", "document", "title", "location", "start", "end", "snippet", "score"}


@pytest.fixture(scope="module")
def rag_index(tmp_path_factory):
    """tests/retrieval's documents, plus a handover note with a phone number (the scrubber must catch it
    in an audited prompt) and a guideline whose title is markup (the page must show it as text)."""
    docs = make_docs(tmp_path_factory.mktemp("rag") / "docs", bad=False)
    (docs / "handover.md").write_text(f"# Metformin handover\n\nQuestions about metformin dosing: call the "
                                      f"diabetes nurse on {PHONE}.\n")
    (docs / "insulin.md").write_text(f"# Insulin pens {INJECTED}\n\nUnopened insulin pens are stored in the "
                                     "fridge; the pen in use stays at room temperature.\n")
    out = docs.parent / "index"
    build_index(load_config(IndexConfig, docs=str(docs), out=str(out), progress=False))
    return {"path": out, "docs": docs, "fingerprint": json.loads((out / "manifest.json").read_text())["fingerprint"]}


@pytest.fixture(scope="module")
def rag_server(tiny_model, rag_index, tmp_path_factory):
    """The tiny model with rag=, content auditing on (the prompt the template made is in the log, scrubbed)."""
    live = start_server(tiny_model, tmp_path_factory.mktemp("rag-serve"), rag=str(rag_index["path"]), rag_k=3,
                        rag_min_score=MIN_SCORE, audit_content=True, max_context=2048)
    yield live
    live.stop()


@pytest.fixture(scope="module")
def rag_gateway(rag_index, tmp_path_factory):
    """The gateway with rag= in front of an engine that keeps every request it gets; no content auditing."""
    engine = ScriptedEngine()
    gateway = start_gateway(tmp_path_factory.mktemp("rag-gateway"), [engine.url + "/v1"], rag=str(rag_index["path"]),
                            rag_k=3, rag_min_score=MIN_SCORE)
    gateway.scripted = engine
    yield gateway
    gateway.stop()
    engine.stop()


def ask(server, question: str, stream: bool = False, **extra) -> tuple[dict, list[dict]]:
    """(the answer object, or the stream's final chunk, with the whole text as `text`; every event)."""
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": 8, "temperature": 0,
            "ignore_eos": True, "stream": stream, **extra}
    r = httpx.post(server.url + "/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    if not stream:
        answer = r.json()
        return {**answer, "text": answer["choices"][0]["message"]["content"]}, [answer]
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]
    assert r.text.rstrip().endswith("data: [DONE]")
    final = [e for e in events if e["choices"] and e["choices"][0]["finish_reason"]]
    assert len(final) == 1
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    return {**final[0], "text": text}, events


def audit_lines(server) -> list[dict]:
    return [json.loads(x) for x in server.audit_log.read_text().splitlines()]


def last_line(server) -> dict:
    return audit_lines(server)[-1]


def check_citations(citations: list[dict], first_document: str, k: int = 3) -> None:
    assert [c["n"] for c in citations] == list(range(1, len(citations) + 1)) and 0 < len(citations) <= k
    assert all(set(c) == FIELDS for c in citations)
    assert citations[0]["document"] == first_document
    scores = [c["score"] for c in citations]
    assert scores == sorted(scores, reverse=True) and scores[0] >= MIN_SCORE


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_tiny_model_answers_with_citations(rag_server, rag_index, stream):
    answer, events = ask(rag_server, DIABETES, stream)
    assert answer["text"] and answer["choices"][0]["finish_reason"] == "length"
    citations = answer["citations"]
    check_citations(citations, "diabetes.txt")
    assert "Metformin is the first-line drug" in citations[0]["snippet"]
    assert citations[0]["location"] == "" and (citations[0]["start"], citations[0]["end"]) == (0, len(GOOD["diabetes.txt"].strip()))
    assert "handover.md" in [c["document"] for c in citations]
    if stream:   # only the final chunk carries them; the disclaimer stays on the first
        carriers = [e for e in events if "citations" in e]
        assert len(carriers) == 1 and carriers[0]["choices"][0]["finish_reason"] and "disclaimer" in events[0]
    line = last_line(rag_server)
    assert line["outcome"] == "ok" and line["rag_index"] == rag_index["fingerprint"]
    assert line["rag_chunks"] == [c["chunk"] for c in citations] and line["rag_top_score"] == citations[0]["score"]
    # the prompt the engine got went through the model's chat template (the tiny model's is Llama-2's),
    # the sources in its system part after the served system prompt, the question as the user's turn
    # (a stream's prompt is on its opening line)
    prompt = [x for x in audit_lines(rag_server) if "prompt" in x][-1]["prompt"]
    assert prompt.startswith("<s>[INST] <<SYS>>\n" + DEFAULT_SYSTEM_PROMPT[:40])
    assert "\n\nRelevant documents:\n[1] diabetes. Metformin is the first-line drug" in prompt
    assert "cite them as [n]" in prompt and prompt.endswith("type 2 diabetes? [/INST]")
    assert PHONE not in prompt and "[PHONE]" in prompt   # audited text is scrubbed, sources included


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("question", [NO_WORD, WEAK], ids=["no-shared-word", "under-the-threshold"])
def test_nothing_relevant_is_said_and_the_model_is_not_asked(rag_server, rag_index, question, stream):
    answer, events = ask(rag_server, question, stream, stream_options={"include_usage": True} if stream else None)
    assert answer["text"] == NO_SOURCE and answer["citations"] == []
    assert answer["choices"][0]["finish_reason"] == "stop" and "not a certified medical device" in \
        (events[0]["disclaimer"])
    line = last_line(rag_server)
    assert line["outcome"] == "no_source" and line["rag_chunks"] == [] and line["rag_index"] == rag_index["fingerprint"]
    assert line["prompt_tokens"] == 0 and line["completion_tokens"] == 0   # no prompt was built, nothing generated
    assert line["rag_top_score"] == 0.0 if question == NO_WORD else 0 < line["rag_top_score"] < MIN_SCORE
    assert line["completion"] == NO_SOURCE
    if stream:
        assert events[-1]["usage"]["total_tokens"] == 0


def test_a_plain_completion_is_refused_with_rag(rag_server):
    r = httpx.post(rag_server.url + "/v1/completions", json={"prompt": DIABETES, "max_tokens": 4})
    assert r.status_code == 400 and "/v1/chat/completions" in r.json()["error"]["message"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_gateway_sends_the_sources_to_the_engine(rag_gateway, rag_index, stream):
    seen = len(rag_gateway.scripted.seen)
    answer, _ = ask(rag_gateway, ASTHMA, stream)
    assert answer["text"] == "Intramuscular epinephrine 0.5 mg now."
    check_citations(answer["citations"], "asthma.html")
    assert answer["citations"][0]["location"] == "section: Attacks"
    [got] = rag_gateway.scripted.seen[seen:]
    system, user = got["body"]["messages"]
    assert user == {"role": "user", "content": ASTHMA}   # the question itself is not rewritten
    assert system["role"] == "system" and system["content"].startswith(DEFAULT_SYSTEM_PROMPT)
    assert "\n\nRelevant documents:\n[1] Asthma care. Attacks Salbutamol relieves an acute attack." in \
        system["content"]
    assert system["content"].count("\n[") == len(answer["citations"])
    line = last_line(rag_gateway)
    assert line["outcome"] == "ok" and line["rag_index"] == rag_index["fingerprint"]
    assert line["rag_chunks"] == [c["chunk"] for c in answer["citations"]]
    # no content auditing: neither the prompt nor any source's text is in the log
    assert "prompt" not in line and "completion" not in line and "Salbutamol" not in json.dumps(line)


def test_a_client_system_message_keeps_its_place_before_the_sources(rag_gateway):
    seen = len(rag_gateway.scripted.seen)
    ask(rag_gateway, DIABETES, messages=[{"role": "developer", "content": "Answer in one sentence."},
                                         {"role": "user", "content": DIABETES}])
    system = rag_gateway.scripted.seen[seen]["body"]["messages"][0]
    assert system["content"].startswith("Answer in one sentence.\n\nRelevant documents:\n[1] diabetes. Metformin")
    assert DEFAULT_SYSTEM_PROMPT not in system["content"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_gateway_does_not_ask_the_engine_when_nothing_matches(rag_gateway, stream):
    seen = len(rag_gateway.scripted.seen)
    answer, _ = ask(rag_gateway, WEAK, stream)
    assert answer["text"] == NO_SOURCE and answer["citations"] == []
    assert len(rag_gateway.scripted.seen) == seen
    assert last_line(rag_gateway)["outcome"] == "no_source"


def test_a_wrong_rag_path_is_a_clear_error(tiny_model, rag_index, tmp_path, capsys, caplog):
    base = ["serve", f"model={tiny_model}", "auth=none", f"audit_log={tmp_path / 'audit.log'}", "log_level=warning"]
    assert main([*base, f"rag={tmp_path / 'nowhere'}"]) == 2
    assert f"rag: {tmp_path / 'nowhere'}: not found; build an index with `sm70 index build" in capsys.readouterr().err
    assert main([*base, f"rag={rag_index['docs']}"]) == 2   # a folder of documents, not an index
    assert "not a finished index (no complete manifest.json)" in capsys.readouterr().err
    assert main([*base, f"rag={rag_index['path']}", "rag_retriever=dense"]) == 2
    assert "rag_retriever: retriever 'dense' is not in" in capsys.readouterr().err
    with caplog.at_level(logging.INFO, logger="sm70.serve"):
        Grounding(rag_index["path"])
    assert rag_index["fingerprint"] in caplog.text   # which index answered is in the server's log
    assert "measure the threshold on this one (bench/rag_threshold.py)" in caplog.text   # 13 chunks, not 22k


def test_the_page_shows_the_citations_under_the_answer(rag_server, browser):  # noqa: F811
    page = browser.new_page(bypass_csp=True)  # lets the test poll with JS; the page itself must not rely on CSP
    page.goto(rag_server.url + "/")
    page.wait_for_selector("#chat:not([hidden])")
    page.fill("#prompt", "How are insulin pens stored?")
    page.click("#send")
    page.wait_for_function("!document.getElementById('send').disabled && document.querySelector('li.assistant')",
                           timeout=60_000)
    assert page.locator("li.error").count() == 0
    first = page.locator("li.assistant .citations li").first
    assert first.locator(".n").inner_text() == "[1]" and first.locator(".document").inner_text() == "insulin.md"
    assert first.locator(".title").text_content() == f"Insulin pens {INJECTED}"   # markup shown as text
    assert first.locator(".location").inner_text() == f"section: Insulin pens {INJECTED}"
    assert first.locator(".score").inner_text().startswith("score ")
    assert not first.locator("details").evaluate("d => d.open")   # the passage is folded
    assert "stored in the fridge" in first.locator("details .snippet").text_content()
    assert page.locator("#messages img").count() == 0 and page.evaluate("window.__pwned") is None
    page.fill("#prompt", NO_WORD)   # nothing relevant: the fixed answer, no sources under it
    page.click("#send")
    page.wait_for_function("!document.getElementById('send').disabled "
                           "&& document.querySelectorAll('li.assistant').length == 2", timeout=60_000)
    assert page.locator("li.assistant .text").nth(1).inner_text() == NO_SOURCE
    assert page.locator("li.assistant").nth(1).locator(".citations").count() == 0
    page.close()


def test_the_terminal_chat_lists_the_sources_after_the_answer(rag_server):
    import os
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "sm70.cli", "chat", f"url={rag_server.url}", "temperature=0",
                           "max_tokens=4"], input=f"{DIABETES}\n{ASTHMA}\n/exit\n", capture_output=True, text=True,
                          timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    blocks = done.stdout.split("Sources:")
    assert len(blocks) == 3, done.stdout              # one list per answer
    assert "[1] diabetes.txt" in blocks[1] and "[1] asthma.html — Asthma care" in blocks[2], done.stdout
