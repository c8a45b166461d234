"""Engines sm70 runs itself, one module each, behind one registry (registry.py); a request crosses from
the HTTP loop to an engine's thread through a Handle (handle.py)."""
