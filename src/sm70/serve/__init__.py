"""Private on-site serving: an OpenAI-compatible server with per-user keys, a hash-chained audit log,
a clinicians' web page and a terminal chat, in front of an engine it runs (transformers, llama.cpp's
llama-server, vLLM) or of OpenAI-compatible engines elsewhere (`upstream=`).

Laid out by responsibility, as vLLM's entrypoints/openai/ is; imports flow left to right only
(tests/serve/test_layout.py):

  guard/    keys (auth), limits, hosts, audit + chain, PHI scrubbing: policies that know no HTTP
  engines/  one module per engine behind one registry, and the handle a request's events cross
  api/      protocol (wire schemas), serving (request -> engine -> reply), gate (every request's
            checks), app (the router), metrics, static/ (the clinicians' page)
  gateway/  upstream mode: pool (which engine answers, ejection), proxy (one request through it)
  main.py   `sm70 serve`: wires one of the above together; chat.py: `sm70 chat`
"""
