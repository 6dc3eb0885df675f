"""Several processes serving one address: the owner, its workers, and the private channel between them.

With `workers = N > 1` the twistd process (the owner) keeps the store and the controllers and
serves requests as before; it starts N-1 workers that accept on the same listening socket,
authenticate and authorize every request, proxy remote API groups from their own routing table, and
pass everything else to the owner over a Unix socket that carries the caller's identity.  With etcd
storage every worker is a full replica on its own etcd store instead (no channel); the owner only
supervises them and tells them, on its control socket, whether every worker is ready.
"""
