"""KServe's ``ModelServer`` with what radpipe needs of it: a listen address, readiness that means "can
answer", a repository whose load brings the model back, and gRPC behind the same access policy as REST.

KServe 0.21 binds its REST server to ``0.0.0.0`` and its gRPC server to ``[::]`` unconditionally
(``kserve.protocol.rest.server.RESTServer``, ``kserve.protocol.grpc.server.GRPCServer``), answers
``/v2/health/ready`` with ``true`` even when no model is registered (``DataPlane.ready``), and its
repository's ``load`` does nothing, so a model unloaded through the API stays unloaded. The classes here
change exactly those points and keep the rest of KServe's server (routes, handlers, signals, logging).
"""

from __future__ import annotations

import asyncio
import logging
from concurrent import futures
from typing import Any

from grpc import aio
from kserve import ModelServer
from kserve.model_repository import ModelRepository
from kserve.protocol.dataplane import DataPlane
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer

from radpipe.serving.access import AccessPolicy, grpc_interceptor
from radpipe.serving.model import RadpipeModel

logger = logging.getLogger(__name__)


class ServedModels(ModelRepository):
    """The one model this server serves: ``unload`` stops it (KServe's), ``load`` loads and warms it again."""

    def __init__(self, model: RadpipeModel) -> None:
        super().__init__()
        self.served = model
        self._loading = asyncio.Lock()

    async def load(self, name: str) -> bool:  # type: ignore[override]
        if name != self.served.name:
            raise KeyError(f"this server serves '{self.served.name}' only, not '{name}'")
        async with self._loading:  # two load requests at once load once
            if name not in self.models or not self.served.can_answer():
                logger.info(f"serving: loading '{name}' again (repository API)")
                await asyncio.to_thread(self.served.load)
                self.update(self.served)
        return True


class ServedDataPlane(DataPlane):
    """KServe's data plane, with readiness that is false whenever the served model cannot answer."""

    def __init__(self, registry: ModelRepository, model: RadpipeModel) -> None:
        super().__init__(model_registry=registry)
        self._served = model

    def _answers(self) -> bool:
        return self._served.can_answer() and self.model_registry.get_model(self._served.name) is self._served

    async def ready(self) -> bool:
        return self._answers() and await super().ready()

    async def model_ready(self, model_name: str, disable_predictor_health_check: bool = False) -> bool:
        if model_name == self._served.name:  # known here even while unloaded: not ready, rather than unknown
            return self._answers()
        return await super().model_ready(model_name, disable_predictor_health_check)


def listen_address(host: str, port: int) -> str:
    """``host:port`` for gRPC, with an IPv6 literal in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


class ServedGRPCServer(GRPCServer):
    """KServe's gRPC server, bound to ``host`` and checked by the access policy before any handler runs.

    ``start`` is KServe 0.21's, with the address and the first interceptor changed (KServe builds both
    inside ``start``, so there is no smaller place to change them)."""

    def __init__(self, host: str, policy: AccessPolicy, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = host
        self._policy = policy

    async def start(self, max_workers: int) -> None:
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(grpc_interceptor(self._policy), LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[
                ("grpc.max_send_message_length", self._kwargs.get("grpc_max_send_message_length")),
                ("grpc.max_receive_message_length", self._kwargs.get("grpc_max_receive_message_length")),
            ],
        )
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = listen_address(self._host, self._port)
        if self._server.add_insecure_port(address) == 0:
            raise OSError(f"gRPC cannot listen on {address}")
        logger.info(f"serving: gRPC on {address}")
        await self._server.start()
        await self._server.wait_for_termination()


class RadpipeModelServer(ModelServer):
    """``kserve.ModelServer`` serving one :class:`RadpipeModel` on ``host``, under ``policy``."""

    def __init__(
        self,
        model: RadpipeModel,
        host: str,
        policy: AccessPolicy,
        enable_grpc: bool = False,
        **server_args: Any,
    ) -> None:
        # gRPC is started in setup_event_loop (bound to host, behind the policy), never by KServe's start.
        super().__init__(registered_models=ServedModels(model), enable_grpc=False, workers=1, **server_args)
        self.host = host
        self.policy = policy
        self._grpc_wanted = enable_grpc
        self.dataplane = ServedDataPlane(self.registered_models, model)

    def setup_event_loop(self) -> None:
        """Called by ``ModelServer.start`` after it made its servers and before it runs them: bind them here."""
        from kserve.model_server import args as kserve_args

        if self._rest_server is None:
            raise RuntimeError("radpipe's server runs one worker; the REST server was not made")
        self._rest_server.config.host = self.host
        if self._grpc_wanted:
            self._grpc_server = ServedGRPCServer(
                self.host,
                self.policy,
                self.grpc_port,
                self.dataplane,
                self.model_repository_extension,
                kwargs=vars(kserve_args),
                grace_period=self.grace_period,
            )
            self.servers.append(self._grpc_server.start(self.max_threads))
        super().setup_event_loop()
