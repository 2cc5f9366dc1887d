"""Serving: TF Serving clients (gRPC `Client`, REST `RestClient`) and an embedded server that speaks the
same protocol (`kerasvae serve`, `Server`)."""

from kerasvae.serving.client import Client, RestClient, ServingClientError

__all__ = ["Client", "RestClient", "Server", "ServingClientError", "serve"]


def __getattr__(name):
    # The server pulls in grpc and the serving protos; import it only when asked for.
    if name in ("Server", "serve"):
        from kerasvae.serving import server

        return getattr(server, name)
    raise AttributeError(name)
