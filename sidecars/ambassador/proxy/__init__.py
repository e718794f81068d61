"""The data plane: listening sockets, one request path per protocol, and what they share.

`listener.py` binds a port and picks the proxy of its mode: `http_proxy.py` (HTTP/1.1, compiled),
`tcp_proxy.py` (opaque bytes), `sharded_proxy.py` with `redis_proxy.py` and `memcached_proxy.py`
(keys routed to shards). Each proxy asks its cluster (`sidecars.ambassador.cluster`) for an endpoint
per try and never the other way round. A new protocol is one module here beside them.
"""
