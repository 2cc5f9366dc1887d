"""Serving: TF Serving clients (gRPC `Client`, REST `RestClient`) and an embedded server that speaks the
same protocol (`kerasvae serve`, `Server`, batching with `BatchingParameters`). Importing this package
loads numpy and the standard library only, so `RestClient` works without TensorFlow; `Client` and the
server import what they need when used."""

from kerasvae.serving.batching import BatchingParameters
from kerasvae.serving.client import Client, RestClient, ServingClientError

__all__ = ["BatchingParameters", "Client", "RestClient", "Server", "ServingClientError", "serve"]


def __getattr__(name):
    # The server pulls in grpc and the serving protos; import it only when asked for.
    if name in ("Server", "serve"):
        from kerasvae.serving import server

        return getattr(server, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
