"""The kinds this server stores and serves itself, each described by a strategy."""
