"""The control plane: the upstream endpoints behind a listener and how one is chosen for a try.

`cluster.py` ties together discovery (`discovery.py`), active health checks (`health.py`), outlier
ejection (`outlier.py`), the retry budget and circuit breaker (`budget.py`) and the balancers
(`balancer.py`); `sharding.py` and `hashing.py` place keys on shards for the redis and memcached
listeners. Nothing here imports the data plane (`sidecars.ambassador.proxy`).
"""
