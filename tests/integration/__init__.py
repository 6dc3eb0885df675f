"""Tests over real sockets and processes on loopback."""
