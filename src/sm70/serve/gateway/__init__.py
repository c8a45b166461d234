"""Upstream mode: `sm70 serve upstream=URL[,URL...]` puts the guard in front of OpenAI-compatible engines
(llama-server, vLLM, TGI, another sm70). pool (which engine answers, ejection) -> proxy (one request)."""
