"""Streaming for CRI Exec, Attach and PortForward: SPDY/3.1 and WebSocket, over one HTTP server.

Protocol modules (``spdy``, ``remotecommand``'s status builders, ``websocket``'s
channel codec, ``tokens``) do no I/O; ``spdy_conn``, ``hijack``, ``server`` and
``netns_dial`` do.  The runtime plugs in through the narrow Protocols of
``backend``.
"""
