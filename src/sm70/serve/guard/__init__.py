"""What stands between a user and any engine, independent of HTTP: keys (auth), limits, allowed Hosts,
connection caps, the audit log and its chain, PHI scrubbing."""
