"""`sm70 serve ... rag=INDEX rag_k=5`: chat answers from the passages of an `sm70 index`, with citations.

The router calls this module before a request reaches its service, so every engine is grounded the
same way: transformers, vLLM and llama.cpp in this process, and the engines behind the gateway.

- Retrieval reads the user's last message only (the question, as MIRAGE retrieves), not the history.
- The k snippets, numbered as `sm70 eval rag=` numbers them (retrieval/citations.py, render.py), go
  into the system message after the served system prompt (or after the client's own system message)
  with the instruction to answer from them and cite them as [n]; the engine renders the conversation
  through the model's chat template.
- The answer carries `citations`, [{n, chunk, document, title, location, start, end, snippet, score}]:
  in the chat.completion object, or in a stream's chunk with the finish_reason (the service that
  writes that chunk adds the request's `final_fields()`).
- Nothing relevant: when no chunk shares a word with the question, or its best BM25 score is under
  `rag_min_score`, the engine is not asked and the answer is NO_SOURCE with `citations: []`. BM25
  scores depend on the corpus: the default was measured by bench/rag_threshold.py, and a site
  re-measures it on its own index and questions (README, "Grounded answers").
- `/v1/completions` takes a raw prompt with no question to retrieve for, so with rag= it is a 400.
- The audit line gets the index's fingerprint, the cited chunk numbers and the best BM25 score. The
  snippets' text is in the prompt only, so it reaches the log only with audit_content=true, scrubbed
  like every prompt.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import AsyncIterator

from sm70.errors import Sm70Error
from sm70.render import render_documents
from sm70.retrieval.citations import citation, snippet
from sm70.serve.guard.audit import AuditRecord
from sm70.serve.api.protocol import (ChatMessage, ChatRequest, Request, chat_chunk, chat_response, new_id,
                                     sse_event, usage)
from sm70.serve.api.serving import HTTPError

log = logging.getLogger("sm70.serve")

GATE = "bm25"   # the retriever whose scores say whether anything matches (RRF scores are ranks, not matches)
# bench/rag_threshold.py on recipes/index/pubmedqa-meadow.yaml's index (README, "Grounded answers"): of
# 500 PubMedQA questions whose abstract is indexed 0.90 are kept, of 80 non-medical ones 0.96 refused.
MIN_SCORE = 8.0
MEASURED_CHUNKS = 21_993   # that index's size: BM25 scores run lower in a smaller corpus (rarer words weigh less)
NO_SOURCE = "No source in this index matches the question, so sm70 does not answer it from memory."
INSTRUCTION = ("Answer from these documents and cite them as [n]. If they do not answer the question, "
               "say so instead of answering from memory.")
SEARCH_SLOTS = 2   # searches at once, off the event loop: a 1M-chunk BM25 search takes ~50 ms of CPU


class Grounding:
    """An index opened once, at start, and the rules that put its passages into a chat request."""

    def __init__(self, index: Path, k: int = 5, min_score: float = MIN_SCORE, retriever: str = "auto",
                 snippet_chars: int = 1500):
        from sm70.retrieval.search import Index

        if not Path(index).exists():
            raise Sm70Error(f"rag: {index}: not found; build an index with `sm70 index build docs=DIR out={index}`")
        try:
            self.index = Index(index)
        except Sm70Error as e:
            raise Sm70Error(f"rag: {e}") from None
        self.k, self.min_score, self.snippet_chars = k, min_score, snippet_chars
        built = self.index.built
        try:
            self.retriever = self.index.resolve(retriever)
            for name in built if self.retriever == "rrf" else [self.retriever]:
                self.index.retriever(name)   # loaded now: a broken index fails the start, not a request
        except Sm70Error as e:
            raise Sm70Error(f"rag_retriever: {e}") from None
        self.gated = GATE in built
        if min_score > 0 and not self.gated:
            raise Sm70Error(f"rag_min_score: {min_score} is a BM25 score and {index} has no bm25 retriever (built: "
                            f"{', '.join(built)}); rebuild it with retrievers=[bm25,...] or pass rag_min_score=0")
        if self.gated:
            self.index.retriever(GATE)
        self.slots = asyncio.Semaphore(SEARCH_SLOTS)
        chunks = len(self.index.store)
        if min_score == MIN_SCORE and not MEASURED_CHUNKS / 4 <= chunks <= MEASURED_CHUNKS * 4:
            log.warning("rag_min_score=%g was measured on an index of %d chunks and %s holds %d: BM25 scores depend "
                        "on the corpus, so measure the threshold on this one (bench/rag_threshold.py)", min_score,
                        MEASURED_CHUNKS, index, chunks)
        log.info("rag: %s, fingerprint %s (%d chunks; retriever %s, k=%d, rag_min_score=%g on %s scores)", index,
                 self.fingerprint, chunks, self.retriever, k, min_score, GATE if self.gated else "no")

    @property
    def fingerprint(self) -> str:
        return self.index.fingerprint

    # -- retrieval (CPU: run off the event loop) ---------------------------------------------------
    def sources(self, question: str) -> tuple[list[dict], float | None]:
        """The k best chunks for the question, and its best BM25 score (0: no chunk shares a word)."""
        hits = self.index.search([question], self.k, self.retriever)[0]
        if not self.gated:
            return hits, None
        if self.retriever == GATE:
            return hits, hits[0]["score"] if hits else 0.0
        best = self.index.rank([question], 1, GATE)[0]
        return hits, round(best[0][1], 6) if best else 0.0

    def messages(self, req: ChatRequest, system_prompt: str, hits: list[dict]) -> list[ChatMessage]:
        """The conversation with the sources in its system message, after the system prompt it had."""
        first, *rest = req.messages
        if first.role in ("system", "developer"):
            base = first.content
        else:
            base, rest = system_prompt, req.messages
        sources = render_documents([snippet(h, self.snippet_chars) for h in hits]) + INSTRUCTION
        return [ChatMessage(role="system", content=f"{base}\n\n{sources}" if base else sources), *rest]

    # -- one request -------------------------------------------------------------------------------
    async def apply(self, req: Request, service, record: AuditRecord) -> ChatRequest | None:
        """The request grounded in its sources, with `citations` as its final fields; None when nothing
        in the index matches the question (answer it with `refusal`)."""
        if not isinstance(req, ChatRequest):
            raise HTTPError(400, "this server answers from its index (rag=), which needs a question: use "
                                 "/v1/chat/completions; /v1/completions takes a raw prompt that cannot be grounded",
                            param="prompt")
        questions = [m.content for m in req.messages if m.role == "user"]
        if not questions:
            raise HTTPError(400, "messages: no user message; with rag= the last user message is the question "
                                 "the sources are retrieved for", param="messages")
        async with self.slots:
            hits, top = await asyncio.to_thread(self.sources, questions[-1])
        record.rag_index, record.rag_top_score = self.fingerprint, top
        if not hits or (top is not None and top < self.min_score):
            record.rag_chunks = []
            return None
        record.rag_chunks = [h["chunk"] for h in hits]
        grounded = req.model_copy(update={"messages": self.messages(req, service.system_prompt, hits)})
        grounded.set_final_fields(citations=[citation(n, h, self.snippet_chars) for n, h in enumerate(hits, 1)])
        return grounded

    def refusal(self, req: ChatRequest, service, record: AuditRecord) -> dict | AsyncIterator[str]:
        """NO_SOURCE with `citations: []`, whole or streamed, without asking the engine."""
        model = _model(req, service.engine.model_ids)
        record.model, record.outcome = model, "no_source"
        if service.keep_text:
            record.prompt = "".join(f"{m.role.capitalize()}: {m.content}\n" for m in req.messages)
            record.completion = [NO_SOURCE]
        if not req.stream:
            return {**chat_response(new_id("chatcmpl"), model, NO_SOURCE, "stop", usage(0, 0), service.disclaimer),
                    "citations": []}
        return _refusal_stream(req, model, service.disclaimer)


async def _refusal_stream(req: ChatRequest, model: str, disclaimer: str) -> AsyncIterator[str]:
    rid = new_id("chatcmpl")
    yield sse_event(chat_chunk(rid, model, {"role": "assistant", "content": ""}, disclaimer=disclaimer))
    yield sse_event(chat_chunk(rid, model, {"content": NO_SOURCE}))
    yield sse_event(chat_chunk(rid, model, {}, "stop", citations=[]))
    if req.include_usage():
        yield sse_event({**chat_chunk(rid, model, {}), "choices": [], "usage": usage(0, 0)})
    yield "data: [DONE]\n\n"


def _model(req: Request, served: list[str]) -> str:
    if req.model is None:
        if not served:
            raise HTTPError(503, "no engine is answering", "server_error", headers={"Retry-After": "2"})
        return served[0]
    if req.model not in served:
        raise HTTPError(404, f"model {req.model!r} is not served here; served: {served}", "not_found_error", "model")
    return req.model
