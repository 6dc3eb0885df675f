"""Certificates: loading, the self-signed fallback, the TLS listener and reloading without a restart."""
