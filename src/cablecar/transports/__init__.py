"""Transports turn sockets into sessions: ``standalone`` (our own server) and ``asgi``."""
