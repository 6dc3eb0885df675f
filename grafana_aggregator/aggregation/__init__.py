"""Remote group-versions: the routing table, the proxy, backend clients and the backends' documents."""
