"""The HTTP surface: the Site, the authenticating root, discovery, OpenAPI, health and metrics resources."""
