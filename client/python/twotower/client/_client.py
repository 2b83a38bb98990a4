"""RetrievalClient and AdminClient: typed calls of the twotower.v1 gRPC services."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable, Mapping, Sequence, TypeVar, Union

import grpc  # Debian: python3-grpcio

try:
    from twotower.v1 import admin_pb2, admin_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
except ImportError as e:  # pragma: no cover - the message says what to do
    raise ImportError(
        "the generated twotower.v1 modules are missing: install the package "
        "(python3 -m pip install --no-deps ./client/python) or build the CMake target "
        "python_client and put <build>/python on PYTHONPATH") from e

# A user or item feature: str (categorical token), int (categorical given as an integer),
# float (numeric), or a list / tuple of str (multi-hot; the KIND_HISTORY feature too).
FeatureInput = Union[str, int, float, Sequence[str]]

AUTO = "auto"
"""service_config value: the shipped config for dns: targets, none for the others."""

T = TypeVar("T")


class TwoTowerError(Exception):
    """A failed call. `code` is the gRPC status code (grpc.StatusCode), `details` the
    server's (or gRPC's) message."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ScoredItem:
    item_id: str
    score: float


@dataclass(frozen=True)
class RetrieveResult:
    """Items best first, the model version that scored them, and whether the model knows
    the user (False: served from the request's features, or as an unknown id)."""
    items: list[ScoredItem]
    model_version: str
    user_known: bool

    @property
    def item_ids(self) -> list[str]:
        return [item.item_id for item in self.items]


@dataclass(frozen=True)
class Query:
    """One Retrieve request (see proto/twotower/v1/retrieval.proto).

    features: the user's features (a user the model never saw needs them); history: the
    user's recent item ids, sent as the `history` feature of a model that has one;
    filters: feature name -> allowed values, every filter must hold; exclude: item ids
    never returned; include_history_items: also return the history's items."""
    user_id: str = ""
    k: int = 10
    features: Mapping[str, FeatureInput] = field(default_factory=dict)
    history: Sequence[str] | None = None
    filters: Mapping[str, Sequence[str]] = field(default_factory=dict)
    exclude: Sequence[str] = ()
    include_history_items: bool = False

    def to_proto(self) -> retrieval_pb2.RetrieveRequest:
        """The request message; ValueError for a feature of an unsupported type."""
        request = retrieval_pb2.RetrieveRequest(
            user_id=self.user_id, k=self.k, exclude_item_ids=list(self.exclude),
            include_history_items=self.include_history_items)
        features = dict(self.features)
        if self.history is not None:
            if "history" in features:
                raise ValueError("history given both as `history` and in `features`")
            features["history"] = list(self.history)
        _set_features(request.user_features, features)
        for name, values in self.filters.items():
            if isinstance(values, str):
                raise ValueError(f"filter {name}: expected a list of values, got a str")
            request.filters.add(feature=name, any_of=list(values))
        return request


def _set_features(target, features: Mapping[str, FeatureInput]) -> None:
    """Fills a map<string, FeatureValue> from Python values."""
    for name, value in features.items():
        feature = target[name]
        if isinstance(value, bool):
            raise ValueError(f"feature {name}: bool is not a feature type")
        if isinstance(value, str):
            feature.categorical = value
        elif isinstance(value, int):
            feature.categorical_int = value
        elif isinstance(value, float):
            feature.numeric = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            feature.multi_hot.SetInParent()  # set even when empty
            feature.multi_hot.values.extend(value)
        else:
            raise ValueError(f"feature {name}: unsupported value {value!r}")


def shipped_service_config() -> str:
    """The text of client/service_config.json: round_robin over every address a dns: name
    resolves to, health checking of twotower.v1.Retrieval, retries on UNAVAILABLE."""
    installed = resources.files(__package__).joinpath("service_config.json")
    if installed.is_file():
        return installed.read_text(encoding="utf-8")
    # In place in the source tree: client/python/twotower/client -> client/.
    return (Path(__file__).resolve().parents[3] / "service_config.json").read_text(encoding="utf-8")


def load_service_config(path: str) -> str:
    """The text of a service config file; ValueError naming the file when it cannot be read
    or is not a JSON object (gRPC checks the rest when the channel is made)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(1 << 20)
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: {e}") from e
    try:
        config = json.loads(text)
    except ValueError as e:
        raise ValueError(f"{path}: not JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    return text


def _refused_at_creation(channel: grpc.Channel) -> bool:
    """True when gRPC made a "lame" channel, whose every call fails, because it refused the
    service config: a new channel is IDLE until it first connects, a lame one reports a
    failure at once."""
    states: list[grpc.ChannelConnectivity] = []
    seen = threading.Event()

    def on_state(state: grpc.ChannelConnectivity) -> None:
        states.append(state)
        seen.set()

    channel.subscribe(on_state, try_to_connect=False)
    seen.wait(5.0)
    channel.unsubscribe(on_state)
    return bool(states) and states[0] in (grpc.ChannelConnectivity.TRANSIENT_FAILURE,
                                          grpc.ChannelConnectivity.SHUTDOWN)


def _channel(target: str, service_config: str | None) -> tuple[grpc.Channel, str | None]:
    """An insecure channel and the service config it uses; service_config is AUTO, None or
    the JSON text of one."""
    if service_config == AUTO:
        service_config = shipped_service_config() if target.startswith("dns:") else None
    options = [("grpc.service_config", service_config)] if service_config else []
    channel = grpc.insecure_channel(target, options=options)
    if service_config and _refused_at_creation(channel):
        channel.close()
        raise ValueError("service config refused by gRPC (gRPC logged why)")
    return channel, service_config


class _Client:
    def __init__(self, channel: grpc.Channel, timeout_s: float) -> None:
        self._channel = channel
        self._timeout = timeout_s

    def _call(self, method: Callable[..., T], request, metadata=None) -> T:
        try:
            return method(request, timeout=self._timeout, metadata=metadata)
        except grpc.RpcError as e:
            raise TwoTowerError(e.code(), e.details() or "") from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _health_messages():
    """grpc.health.v1 HealthCheckRequest / HealthCheckResponse classes, built in a private
    descriptor pool (Debian ships no generated health module; a private pool cannot clash
    with one loaded from elsewhere)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    file = descriptor_pb2.FileDescriptorProto(name="grpc/health/v1/health.proto",
                                              package="grpc.health.v1", syntax="proto3")
    request = file.message_type.add(name="HealthCheckRequest")
    request.field.add(name="service", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_STRING,
                      label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    response = file.message_type.add(name="HealthCheckResponse")
    response.field.add(name="status", number=1, type=descriptor_pb2.FieldDescriptorProto.TYPE_INT32,
                       label=descriptor_pb2.FieldDescriptorProto.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    make = getattr(message_factory, "GetMessageClass", None) or message_factory.MessageFactory(pool).GetPrototype
    return (make(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckRequest")),
            make(pool.FindMessageTypeByName("grpc.health.v1.HealthCheckResponse")))


_HEALTH_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


class RetrievalClient(_Client):
    """The Retrieval API (and gRPC health checking) of a twotower_server.

    target: "host:port", or "dns:///name:port" to spread calls over every address the name
    resolves to. service_config: AUTO (the shipped config for dns: targets), None, or the
    JSON text of a gRPC service config. Failed calls raise TwoTowerError."""

    def __init__(self, target: str, *, timeout_s: float = 5.0, service_config: str | None = AUTO) -> None:
        channel, self.service_config = _channel(target, service_config)
        super().__init__(channel, timeout_s)
        self._stub = retrieval_pb2_grpc.RetrievalStub(self._channel)

    def retrieve(self, user_id: str = "", k: int = 10, **query) -> RetrieveResult:
        """Top-k items for a user; keyword arguments are the other fields of Query."""
        return self.retrieve_query(Query(user_id=user_id, k=k, **query))

    def retrieve_query(self, query: Query) -> RetrieveResult:
        return _result(self._call(self._stub.Retrieve, query.to_proto()))

    def batch_retrieve(self, queries: Sequence[Query]) -> list[RetrieveResult]:
        """One result per query, in order, all from one model version."""
        batch = retrieval_pb2.BatchRetrieveRequest(requests=[q.to_proto() for q in queries])
        return [_result(r) for r in self._call(self._stub.BatchRetrieve, batch).responses]

    def health(self, service: str = "") -> str:
        """The serving status of `service` ("" = the server as a whole): SERVING,
        NOT_SERVING, SERVICE_UNKNOWN or UNKNOWN."""
        request_class, response_class = _health_messages()
        check = self._channel.unary_unary("/grpc.health.v1.Health/Check",
                                          request_serializer=request_class.SerializeToString,
                                          response_deserializer=response_class.FromString)
        response = self._call(check, request_class(service=service))
        return _HEALTH_STATUS.get(response.status, "UNKNOWN")


def _result(response: retrieval_pb2.RetrieveResponse) -> RetrieveResult:
    return RetrieveResult(items=[ScoredItem(i.item_id, i.score) for i in response.items],
                          model_version=response.model_version, user_known=response.user_known)


def read_admin_token(token_file: str | None = None) -> str | None:
    """As the server and the C++ client read it: the file's content when token_file is set
    (stripped; unreadable or empty is an error), else $TWOTOWER_ADMIN_TOKEN (stripped; set
    but blank is an error), else None. ValueError on an error."""
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"admin token file {token_file}: {e}") from e
        if not token:
            raise ValueError(f"admin token file {token_file} is empty")
        return token
    if "TWOTOWER_ADMIN_TOKEN" in os.environ:
        token = os.environ["TWOTOWER_ADMIN_TOKEN"].strip()
        if not token:
            raise ValueError("TWOTOWER_ADMIN_TOKEN is set but blank")
        return token
    return None


class AdminClient(_Client):
    """The Admin API of a twotower_server (its --admin_address).

    token: the server's admin token (sent as "authorization: Bearer <token>"); None reads
    it with read_admin_token(token_file). Failed calls raise TwoTowerError
    (UNAUTHENTICATED for a missing or wrong token)."""

    def __init__(self, target: str, *, token: str | None = None, token_file: str | None = None,
                 timeout_s: float = 30.0) -> None:
        token = token if token is not None else read_admin_token(token_file)
        super().__init__(grpc.insecure_channel(target), timeout_s)
        self._metadata = [("authorization", f"Bearer {token}")] if token else None
        self._stub = admin_pb2_grpc.AdminStub(self._channel)

    def status(self) -> admin_pb2.GetStatusResponse:
        return self._call(self._stub.GetStatus, admin_pb2.GetStatusRequest(), self._metadata)

    def reload(self, bundle_path: str) -> admin_pb2.ReloadModelResponse:
        """Loads the bundle at bundle_path (a path on the server) and swaps it in."""
        return self._call(self._stub.ReloadModel, admin_pb2.ReloadModelRequest(bundle_path=bundle_path),
                          self._metadata)

    def upsert(self, items: Mapping[str, Mapping[str, FeatureInput]]) -> admin_pb2.UpsertItemsResponse:
        """Adds or replaces items: item id -> its features (as for Query.features)."""
        request = admin_pb2.UpsertItemsRequest()
        for item_id, features in items.items():
            entity = request.items.add(id=item_id)
            _set_features(entity.features, features)
        return self._call(self._stub.UpsertItems, request, self._metadata)

    def remove(self, item_ids: Sequence[str]) -> admin_pb2.RemoveItemsResponse:
        return self._call(self._stub.RemoveItems, admin_pb2.RemoveItemsRequest(item_ids=list(item_ids)),
                          self._metadata)
