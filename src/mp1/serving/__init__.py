"""Serving a policy over the network: `mp1 serve` (the server, `mp1.serving.server`, needs torch)
and `PolicyClient` (numpy, msgpack and websockets only: it runs on the robot's computer)."""

from mp1.serving.client import PolicyClient, PolicyServerError, StreamingClient

__all__ = ["PolicyClient", "PolicyServerError", "StreamingClient"]
