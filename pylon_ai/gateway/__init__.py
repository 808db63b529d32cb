"""
The gateway service: configuration, the HTTP routes and the WebSocket, one
exchange per request with its attempts, limits and metrics.

Everything here is private; operators reach it through C{twistd pylon-ai}
(L{pylon_ai.tap}).  Imports run one way: the site and its routes (C{_server},
C{_route_base}, C{_completion_routes}, C{_local_routes}, C{_websocket} and
its C{_ws_*} modules) -> exchange and attempts -> the gateway and its
backends -> the library and L{pylon_ai.formats}.
"""
