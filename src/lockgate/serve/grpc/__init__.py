"""The Open Inference Protocol v2 over gRPC, beside REST, in the same server process.

::

    from lockgate.serve import run_server

    run_server(app, "127.0.0.1", 8080, grpc_port=8081,
               on_grpc_started=lambda host, port: print(f"gRPC on {host}:{port}"))

``inference.GRPCInferenceService`` (ServerLive, ServerReady, ModelReady, ServerMetadata,
ModelMetadata, ModelInfer, ModelStreamInfer) answers stock clients — ``tritonclient.grpc``
and its asyncio client, KServe's ``InferenceGRPCClient`` — through the app's
:class:`~lockgate.serve.inference.InferenceService`, so routing, canaries, shadows, batching,
limits, metrics, the rollback window and capture are the REST data plane's own
(:mod:`.service`, :mod:`.codec`). ``grpc.health.v1.Health`` answers probes (:mod:`.health`).
:class:`GRPCServer` (:mod:`.server`) listens on the REST server's event loop.

The message classes (``predict_v2_pb2``, ``health_pb2`` and their ``.pyi``) are generated from
the ``.proto`` files beside them by the command in this folder's README.md; they live in a
descriptor pool of their own, so a process may also import another copy of the same protocol
(tritonclient's, grpcio-health-checking's).
"""

from lockgate.serve.grpc.server import GRPCServer, message_limit

__all__ = ["GRPCServer", "message_limit"]
