"""Connection limits uvicorn does not have: a cap on open connections and a header-read deadline.

uvicorn starts its keep-alive timer only after a response, so a client that opens a connection
and sends half a request line holds it (and a file descriptor) for as long as it likes; and
`limit_concurrency` is checked only once a request's headers are complete. This protocol closes a
connection that has not completed a request's headers within `header_timeout_s` of opening (or of
its previous response), and refuses connections beyond `max_connections` at once with a 503.
"""

from __future__ import annotations

from uvicorn.protocols.http.auto import AutoHTTPProtocol

_BUSY_TEXT = b"too many open connections; retry later"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: "
        + str(len(_BUSY_TEXT)).encode() + b"\r\nretry-after: 2\r\nconnection: close\r\n\r\n" + _BUSY_TEXT)


def guarded_protocol(max_connections: int, header_timeout_s: float) -> type:
    class GuardedHTTPProtocol(AutoHTTPProtocol):
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                transport.write(BUSY)
                transport.close()
                return
            self._arm()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()   # the next request's headers get the same deadline

        def _arm(self) -> None:
            self.loop.call_later(header_timeout_s, self._deadline, self.cycle)

        def _deadline(self, armed) -> None:
            # still the cycle that was current when armed: no new request's headers arrived since
            if self.cycle is armed and not self.transport.is_closing():
                self.transport.close()

    return GuardedHTTPProtocol
