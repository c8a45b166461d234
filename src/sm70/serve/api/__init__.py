"""The HTTP side: wire schemas (protocol), request logic (serving), the checks every request passes
(gate), the router (app), /metrics, and the clinicians' page (static/)."""
