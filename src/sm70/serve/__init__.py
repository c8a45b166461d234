"""Private on-site serving: an OpenAI-compatible server with per-user keys, a hash-chained audit log,
a clinicians' web page (`static/`), a terminal chat, and the embedded or vLLM engine behind them, or
(`upstream/`) any OpenAI-compatible engines elsewhere.

protocol (wire schemas) -> serving (request logic) -> app (router, auth, audit middleware);
engines -> batcher (continuous batching) | vllm_engine | upstream (pool, proxy);
auth, limits, metrics, audit, phi stand alone.
"""
