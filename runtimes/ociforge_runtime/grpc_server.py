"""Open Inference Protocol v2 over gRPC (``inference.GRPCInferenceService``).

Opt-in: served only when ``OCIFORGE_GRPC=1`` (set in the image config by ``ociforge build
--grpc``, which also installs grpcio and protobuf) on ``GRPC_PORT`` (default 8081). grpcio is
imported here only, and this module only when gRPC is enabled, so images without grpcio start.

Where it runs: in every gunicorn worker, started in the worker after the fork (gRPC's core
threads must not cross a fork), all workers binding the same port with ``SO_REUSEPORT`` so the
kernel spreads connections over them, as it does for HTTP. Each worker's gRPC server therefore
shares that worker's ``Predictor``: the same loaded model (no second copy in memory), the same
readiness (``ServerReady``/``ModelReady`` false until it has loaded), concurrency slots,
timeout and batching, and the same metrics registry (``/metrics`` counts RPCs as
``ociforge_requests_total{method="GRPC",route="grpc:ModelInfer",status="200"}``, status being
the HTTP status the same error would have on the REST routes). A separate process started by
the arbiter would have needed its own copy of the model and its own readiness.

Decoding and encoding reuse ``codec``: the card's declared inputs are checked by
``codec.check_declared_inputs``, outputs named by ``codec.named_outputs`` and typed by
``codec.output_array``, exactly as for the JSON route. Inputs arrive as ``raw_input_contents``
(little-endian, row-major; BYTES as 4-byte little-endian length prefixes, each followed by the
element) or typed ``contents``; outputs are always answered as ``raw_output_contents`` (what
Triton does, and what every client reads). BYTES elements reach the model as ``bytes``.

Errors: the runtime's errors map to status codes (bad input INVALID_ARGUMENT, unknown model
NOT_FOUND, loading or busy UNAVAILABLE, timeout DEADLINE_EXCEEDED, a message over
``OCIFORGE_MAX_REQUEST_BYTES`` RESOURCE_EXHAUSTED from gRPC itself, the model raising INTERNAL
with a request id as on REST) and serving goes on.

Health: ``grpc.health.v1.Health`` (the ``grpcio-health-checking`` package's servicer, which
images built with ``--grpc`` carry) answers ``Check`` and ``Watch`` for the whole server (``""``)
and for ``inference.GRPCInferenceService``: NOT_SERVING until this worker's model has loaded,
SERVING after (the readiness of ``/v2/health/ready``), NOT_SERVING again from SIGTERM on; and
for ``liveness``: SERVING from the start (``/v2/health/live``), so a liveness probe does not kill
a container whose model takes minutes to load. So Kubernetes' native ``grpc:`` probes work on the
gRPC port. Without the package (an image built
before it was added) the inference service still serves and ``grpc_health_unavailable`` is
logged.

Stubs: ``_proto/grpc_predict_v2_pb2.py`` is generated from KServe's ``grpc_predict_v2.proto``
(Apache-2.0, shipped beside it) by grpcio-tools 1.76.0 (protobuf gencode 6.31.1: needs
protobuf >= 6.31.1, < 7 at run time). No ``_pb2_grpc`` module: the service is registered with a
generic handler below, so no grpcio-tools and no protoc run in the image.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent import futures
from typing import Any

from . import __version__, binary, codec, logs
from .config import Settings
from .errors import BadInput, ModelError, NotFound, RuntimeHTTPError
from .predictor import Predictor

SERVICE = "inference.GRPCInferenceService"
HEALTH_SERVICES = ("", SERVICE)  # what grpc.health.v1.Health answers for, following readiness
HEALTH_LIVE = "liveness"  # SERVING while the process serves (a gRPC liveness probe's service)

# Typed ``InferTensorContents`` field per datatype (FP16 travels only as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def available() -> str | None:
    """None when grpcio and protobuf can be imported, else why not."""
    try:
        import grpc  # noqa: F401

        from ._proto import grpc_predict_v2_pb2  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or protobuf's version check
        return f"{type(exc).__name__}: {exc}"
    return None


def _status_code(grpc: Any, status: int) -> Any:
    codes = grpc.StatusCode
    return {
        400: codes.INVALID_ARGUMENT,
        403: codes.PERMISSION_DENIED,
        404: codes.NOT_FOUND,
        413: codes.RESOURCE_EXHAUSTED,
        415: codes.INVALID_ARGUMENT,
        503: codes.UNAVAILABLE,
        504: codes.DEADLINE_EXCEEDED,
    }.get(status, codes.INTERNAL)


# --------------------------------------------------------------------------- tensors


def decode_raw(datatype: str, shape: list[int], raw: bytes, where: str) -> Any:
    """``raw_input_contents`` entry -> numpy array of ``shape`` (a 400 naming the problem)."""
    np = codec._np()
    count = math.prod(shape)
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = binary.bytes_elements(memoryview(raw), count, f"{where}: raw content")
    else:
        dtype = np.dtype(codec.V2_TO_NUMPY[datatype]).newbyteorder("<")
        if len(raw) != count * dtype.itemsize:
            raise BadInput(
                f"{where}: raw content has {len(raw)} bytes; shape {shape} of {datatype} "
                f"needs {count * dtype.itemsize}"
            )
        # a writable copy in native order: models may modify their input
        arr = np.frombuffer(raw, dtype=dtype).astype(dtype.newbyteorder("="))
    if arr.size != count:
        raise BadInput(f"{where}: shape {shape} needs {count} elements, got {arr.size}")
    return arr.reshape(shape)


def decode_contents(datatype: str, shape: list[int], contents: Any, where: str) -> Any:
    """Typed ``contents`` -> numpy array of ``shape``."""
    np = codec._np()
    field = CONTENTS_FIELD.get(datatype)
    if field is None:
        raise BadInput(f"{where}: {datatype} data must be sent in raw_input_contents")
    values = getattr(contents, field)
    count = math.prod(shape)
    if len(values) != count:
        raise BadInput(f"{where}: shape {shape} needs {count} elements, got {len(values)}")
    if datatype == "BYTES":
        arr = np.empty(count, dtype=object)
        arr[:] = list(values)
    else:
        try:
            arr = np.array(values, dtype=codec.V2_TO_NUMPY[datatype])
        except (OverflowError, ValueError, TypeError) as exc:
            raise BadInput(f"{where}: data does not fit datatype {datatype}: {exc}") from None
    return arr.reshape(shape)


def decode_request(request: Any, card: dict[str, Any]) -> tuple[Any, list[str] | None]:
    """A ``ModelInferRequest`` -> ``(model input, requested output names)``."""
    if not request.inputs:
        raise BadInput("infer request: 'inputs' must be a non-empty list of tensors")
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise BadInput(
            f"infer request: {len(raw)} raw_input_contents for {len(request.inputs)} inputs"
        )
    tensors: dict[str, tuple[Any, str]] = {}
    for i, tensor in enumerate(request.inputs):
        name, datatype = tensor.name, tensor.datatype
        where = f"input '{name}'" if name else f"inputs[{i}]"
        if not name:
            raise BadInput(f"{where}: missing field 'name'")
        if name in tensors:
            raise BadInput(f"input '{name}' given twice")
        if datatype not in codec.V2_TO_NUMPY:
            raise BadInput(
                f"{where}: unknown datatype {datatype!r} "
                f"(expected one of {', '.join(codec.V2_TO_NUMPY)})"
            )
        shape = list(tensor.shape)
        if any(d < 0 for d in shape):
            raise BadInput(f"{where}: 'shape' must be non-negative integers, got {shape}")
        if raw:
            if tensor.HasField("contents"):
                raise BadInput(f"{where}: has contents while raw_input_contents is used")
            arr = decode_raw(datatype, shape, raw[i], where)
        else:
            arr = decode_contents(datatype, shape, tensor.contents, where)
        tensors[name] = (arr, datatype)
    codec.check_declared_inputs(tensors, card)
    requested = [o.name for o in request.outputs] or None
    return codec.model_input(tensors), requested


def encode_raw(arr: Any, datatype: str, name: str) -> bytes:
    """A numpy array -> ``raw_output_contents`` bytes (little-endian; BYTES length-prefixed)."""
    try:
        return binary.encode(arr, datatype)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ModelError(
            f"output '{name}' cannot be encoded as {datatype}: {exc}",
            exc,
            public="the model's output cannot be encoded as a tensor",
        ) from exc


# --------------------------------------------------------------------------- service


class InferenceService:
    """The RPCs, over one worker's ``Predictor``."""

    def __init__(self, predictor: Predictor, settings: Settings) -> None:
        from ._proto import grpc_predict_v2_pb2 as pb

        self.pb = pb
        self.predictor = predictor
        self.settings = settings

    def check_model(self, name: str, version: str) -> dict[str, Any]:
        card = self.predictor.card
        if name != card.get("name"):
            raise NotFound(f"model '{name}' not found; this server serves '{card.get('name')}'")
        if version and version != card.get("version"):
            raise NotFound(
                f"model '{name}' has no version '{version}' (version: {card.get('version')})"
            )
        return card

    def ServerLive(self, request: Any) -> Any:  # noqa: N802 - the RPC's name
        return self.pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any) -> Any:  # noqa: N802
        return self.pb.ServerReadyResponse(ready=self.predictor.ready)

    def ModelReady(self, request: Any) -> Any:  # noqa: N802
        self.check_model(request.name, request.version)
        return self.pb.ModelReadyResponse(ready=self.predictor.ready)

    def ServerMetadata(self, request: Any) -> Any:  # noqa: N802
        return self.pb.ServerMetadataResponse(name="ociforge", version=__version__, extensions=[])

    def ModelMetadata(self, request: Any) -> Any:  # noqa: N802
        card = self.check_model(request.name, request.version)
        tensor = self.pb.ModelMetadataResponse.TensorMetadata
        return self.pb.ModelMetadataResponse(
            name=card["name"],
            versions=[card["version"]],
            platform="ociforge",
            inputs=[
                tensor(name=d["name"], datatype=d["datatype"], shape=d["shape"])
                for d in card.get("inputs") or []
            ],
            outputs=[
                tensor(name=d["name"], datatype=d["datatype"], shape=d["shape"])
                for d in card.get("outputs") or []
            ],
        )

    def ModelInfer(self, request: Any) -> Any:  # noqa: N802
        card = self.check_model(request.model_name, request.model_version)
        predictor = self.predictor
        admission = predictor.admit()  # waits for the model to load, takes a slot
        try:
            x, requested = decode_request(request, predictor.card)
        except BaseException:
            admission.release()
            raise
        result = predictor.predict(x, admission)
        card = predictor.card
        response = self.pb.ModelInferResponse(
            model_name=card["name"], model_version=card["version"], id=request.id
        )
        for name, value, datatype in codec.named_outputs(result, card, requested):
            arr, datatype = codec.output_array(name, value, datatype)
            response.outputs.add(name=name, datatype=datatype, shape=list(arr.shape))
            response.raw_output_contents.append(encode_raw(arr, datatype, name))
        return response


RPCS = {
    "ServerLive": ("ServerLiveRequest", "ServerLiveResponse"),
    "ServerReady": ("ServerReadyRequest", "ServerReadyResponse"),
    "ModelReady": ("ModelReadyRequest", "ModelReadyResponse"),
    "ServerMetadata": ("ServerMetadataRequest", "ServerMetadataResponse"),
    "ModelMetadata": ("ModelMetadataRequest", "ModelMetadataResponse"),
    "ModelInfer": ("ModelInferRequest", "ModelInferResponse"),
}


class GrpcServer:
    """One worker's gRPC server: started after the fork, stopped gracefully on SIGTERM."""

    def __init__(self, predictor: Predictor, settings: Settings) -> None:
        import grpc

        self.grpc = grpc
        self.settings = settings
        self.registry = predictor.registry
        self.service = InferenceService(predictor, settings)
        self._stopped: threading.Event | None = None
        self._lock = threading.Lock()
        pb = self.service.pb
        handlers = {
            rpc: grpc.unary_unary_rpc_method_handler(
                self._wrap(rpc, getattr(self.service, rpc)),
                request_deserializer=getattr(pb, req).FromString,
                response_serializer=getattr(pb, resp).SerializeToString,
            )
            for rpc, (req, resp) in RPCS.items()
        }
        self.server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=settings.threads, thread_name_prefix="ociforge-grpc"
            ),
            handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
            options=[
                ("grpc.max_receive_message_length", settings.max_request_bytes),
                ("grpc.max_send_message_length", -1),
                ("grpc.so_reuseport", 1),  # every worker binds the port; the kernel spreads
            ],
        )
        self.predictor = predictor
        self.health = add_health(self.server)
        # inference RPCs not yet over, answer sent included (not Watch streams, which never end)
        self._in_flight = 0
        self._idle = threading.Condition(self._lock)
        self.port = self.server.add_insecure_port(f"{settings.host}:{settings.grpc_port}")
        if self.port == 0:
            raise OSError(f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}")

    def _wrap(self, rpc: str, method: Any) -> Any:
        grpc, settings, registry = self.grpc, self.settings, self.registry
        route = f"grpc:{rpc}"
        path = f"/{SERVICE}/{rpc}"

        def handler(request: Any, context: Any) -> Any:
            start = time.perf_counter()
            status = 200
            with self._lock:
                self._in_flight += 1
            if not context.add_callback(self._rpc_over):  # runs once the answer has gone out
                self._rpc_over()  # (already over: no callback will come)
            try:
                return method(request)
            # (context.abort raises; being raised in an except clause it passes the others)
            except RuntimeHTTPError as exc:
                status = exc.status
                message = exc.message
                if isinstance(exc, ModelError):
                    request_id = _request_id()
                    logs.event(
                        "model_error",
                        level="error",
                        request_id=request_id,
                        route=route,
                        error=exc.message,
                        traceback=logs.format_exception(exc.original or exc),
                    )
                    public = exc.message if settings.error_details else exc.public
                    message = f"{public} (request_id {request_id})"
                    context.set_trailing_metadata((("x-request-id", request_id),))
                context.abort(_status_code(grpc, status), message)
            except Exception as exc:  # noqa: BLE001 - answered INTERNAL with a request id
                status = 500
                request_id = _request_id()
                logs.event(
                    "internal_error",
                    level="error",
                    request_id=request_id,
                    route=route,
                    error=f"{type(exc).__name__}: {exc}",
                    traceback=logs.format_exception(exc),
                )
                context.abort(
                    grpc.StatusCode.INTERNAL, f"internal server error (request_id {request_id})"
                )
            finally:
                latency = time.perf_counter() - start
                registry.record_request("GRPC", route, status, latency)
                if settings.access_log:
                    logs.request("GRPC", route, path, status, latency * 1000.0)

        return handler

    def _rpc_over(self) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.notify_all()

    def start(self) -> None:
        self.server.start()
        logs.event("grpc_listening", bind=f"{self.settings.host}:{self.port}")
        if self.health is not None:
            health, predictor = self.health, self.predictor

            def serving_once_loaded() -> None:
                predictor.wait_ready()
                set_health(health, serving=True)  # ignored once shutting down

            threading.Thread(
                target=serving_once_loaded, name="ociforge-grpc-health", daemon=True
            ).start()

    def begin_stop(self) -> threading.Event:
        """Refuse new RPCs now (health turns NOT_SERVING, Watch streams are told); those in
        flight get the graceful timeout to finish."""
        if self.health is not None:
            self.health.enter_graceful_shutdown()
        with self._lock:
            if self._stopped is None:
                self._stopped = self.server.stop(self.settings.graceful_timeout_s)
            return self._stopped

    def stop(self) -> None:
        """Stop (if not begun) and wait for the inference RPCs in flight, up to the graceful
        timeout; then end at once what is left (health ``Watch`` streams, which would otherwise
        hold the worker for the whole graceful timeout)."""
        stopped = self.begin_stop()
        deadline = time.monotonic() + self.settings.graceful_timeout_s
        with self._lock:
            while self._in_flight and (left := deadline - time.monotonic()) > 0:
                self._idle.wait(left)
        self.server.stop(None)
        stopped.wait(5)


def add_health(server: Any) -> Any:
    """Register ``grpc.health.v1.Health`` on ``server``, NOT_SERVING for now; its servicer, or
    None (and a warning) when ``grpcio-health-checking`` is not installed."""
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    except Exception as exc:  # noqa: BLE001 - ImportError, or protobuf's version check
        logs.event("grpc_health_unavailable", level="warning", error=f"{type(exc).__name__}: {exc}")
        return None
    # non-blocking Watch: a stream holds no thread of the pool that runs ModelInfer
    servicer = health.HealthServicer(experimental_non_blocking=True)
    set_health(servicer, serving=False)  # the servicer starts with "" SERVING
    # a liveness probe must pass while a large model loads (as /v2/health/live does)
    servicer.set(HEALTH_LIVE, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    return servicer


def set_health(servicer: Any, *, serving: bool) -> None:
    from grpc_health.v1 import health_pb2

    status = health_pb2.HealthCheckResponse
    for name in HEALTH_SERVICES:
        servicer.set(name, status.SERVING if serving else status.NOT_SERVING)


def _request_id() -> str:
    import secrets

    return secrets.token_hex(8)
