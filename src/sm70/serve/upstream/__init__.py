"""Upstream mode: `sm70 serve upstream=URL[,URL...]` puts sm70's gate (keys, Host checks, limits,
audit, disclaimer) in front of OpenAI-compatible engines (vLLM, llama.cpp server, TGI, another
`sm70 serve`). pool (which engine answers, health) -> proxy (one request, retry, pass-through).
"""
