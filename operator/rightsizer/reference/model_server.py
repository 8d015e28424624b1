"""A model server for XGBoost with SageMaker's serving contract, for the local backend's load tests.

    GET  /ping         200 once the model is loaded (it is loaded before the port opens)
    POST /invocations  Content-Type text/csv: rows of features, no header
                         -> text/csv, one prediction (the fraud probability) per line
                       Content-Type application/json: {"instances": [[...], ...]} or [[...], ...]
                         -> application/json {"predictions": [...]}
                       415 for other content types; 400, with the reason as text/plain, for a malformed body
                       or rows whose feature count is not the model's

Configured by environment, as SageMaker configures its containers:

    SM_MODEL_DIR                    directory holding model.ubj, model.json or model.bst (default /opt/ml/model)
    RIGHTSIZER_MODEL_URI            file:// URI (or path) of the artifact, or of its directory; wins over SM_MODEL_DIR
    SAGEMAKER_BIND_TO_PORT          port (default 8080; 0 picks a free one, named in the startup line)
    RIGHTSIZER_BIND_HOST            address to listen on (default 127.0.0.1)
    SAGEMAKER_MODEL_SERVER_WORKERS  worker processes sharing the port, each with its own copy of the model
                                    (default 1)
    OMP_NUM_THREADS                 XGBoost threads per worker (default: the CPUs this process may use)

Run: python -m rightsizer.reference.model_server

It prints one line when it listens and nothing per request. A missing or unreadable model ends it at once with
a message and exit status 1. SIGTERM (or SIGINT) closes the port, lets requests in flight finish, and exits 0.

Speed: the per-request work of a web framework costs several times the model's own ~0.3 ms (MLServer spends
2-4 ms of CPU per request; benchmarks/model_server.py --mlserver compares the two), so requests go through uvicorn's httptools parser on uvloop
straight to one ASGI callable, and prediction runs on the event loop thread: it is shorter than a hand-off to a
thread pool would be, and one process serves one request at a time either way. Workers add processes.
"""

from __future__ import annotations

import ctypes
import dataclasses
import io
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any, Awaitable, Callable, Mapping
from urllib.parse import unquote, urlparse

import numpy as np
import uvicorn
import xgboost
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

MODEL_FILE_NAMES = ("model.ubj", "model.json", "model.bst")
DEFAULT_MODEL_DIR = "/opt/ml/model"
DEFAULT_PORT = 8080
DEFAULT_HOST = "127.0.0.1"
# Worker processes import the application by name: `python -m` runs this module as __main__.
APP_FACTORY = "rightsizer.reference.model_server:app_from_environment"
LOG_PREFIX = "rightsizer model server"
SUPERVISOR_PID_ENV = "RIGHTSIZER_SERVER_SUPERVISOR_PID"
PR_SET_PDEATHSIG = 1

CSV = b"text/csv"
JSON = b"application/json"
TEXT = b"text/plain; charset=utf-8"

Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class ConfigurationError(Exception):
    """The server cannot start: the message says why and what to set."""


class BadRequest(Exception):
    """The client's request cannot be served: the message goes back to it with the status."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass(frozen=True)
class Settings:
    model: Path
    host: str
    port: int
    workers: int
    threads: int


# Past this, a thread count is a typo: five times the vCPUs of the largest SageMaker instance (192), where
# libgomp and XGBoost would fail later with a traceback (XGBoost takes an int32, libgomp an unsigned long).
MAX_THREADS = 1024


def settings_from_environment(environ: Mapping[str, str] = os.environ) -> Settings:
    return Settings(
        model=model_path(environ),
        host=environ.get("RIGHTSIZER_BIND_HOST") or DEFAULT_HOST,
        port=integer_setting(environ, "SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, minimum=0, maximum=65535),
        workers=integer_setting(environ, "SAGEMAKER_MODEL_SERVER_WORKERS", 1, minimum=1),
        threads=integer_setting(environ, "OMP_NUM_THREADS", len(os.sched_getaffinity(0)), minimum=1,
                                maximum=MAX_THREADS),
    )


def integer_setting(environ: Mapping[str, str], name: str, default: int, *, minimum: int,
                    maximum: int | None = None) -> int:
    text = environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ConfigurationError(f"{name}={text!r} is not an integer") from None
    if value < minimum:
        raise ConfigurationError(f"{name}={value} is below {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigurationError(f"{name}={value} is above {maximum}")
    return value


def model_path(environ: Mapping[str, str]) -> Path:
    """The artifact named by RIGHTSIZER_MODEL_URI, or else the well-known file in SM_MODEL_DIR."""
    uri = environ.get("RIGHTSIZER_MODEL_URI", "").strip()
    if uri:
        parsed = urlparse(uri)
        if parsed.scheme not in ("", "file"):
            raise ConfigurationError(f"RIGHTSIZER_MODEL_URI={uri!r}: only file:// URIs can be served locally")
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"RIGHTSIZER_MODEL_URI={uri!r}: a file URI names an absolute path, "
                                     "file:///path/to/model.ubj")
        location = Path(unquote(parsed.path))
        source = f"RIGHTSIZER_MODEL_URI={uri!r}"
    else:
        location = Path(environ.get("SM_MODEL_DIR") or DEFAULT_MODEL_DIR)
        source = f"SM_MODEL_DIR={str(location)!r}"
    if location.is_file():
        return location
    if location.is_dir():
        for name in MODEL_FILE_NAMES:
            if (location / name).is_file():
                return location / name
        raise ConfigurationError(f"{source}: no {', '.join(MODEL_FILE_NAMES)} in {location}")
    raise ConfigurationError(f"{source}: {location} does not exist")


def load_booster(path: Path, threads: int) -> xgboost.Booster:
    try:
        booster = xgboost.Booster(model_file=str(path))
    except xgboost.core.XGBoostError as error:
        # XGBoost's message starts with a source location and can run to a stack trace: keep its gist.
        reason = str(error).strip().splitlines()[0]
        raise ConfigurationError(f"cannot load {path} as an XGBoost model: {reason}") from None
    booster.set_param({"nthread": threads})
    return booster


def media_type(headers: list[tuple[bytes, bytes]]) -> bytes:
    for name, value in headers:
        if name == b"content-type":
            return value.split(b";", 1)[0].strip().lower()
    return b""


def parse_csv(body: bytes) -> np.ndarray:
    if not body.strip():
        raise BadRequest("empty body: send one row of comma-separated features per line")
    try:
        # numpy's C reader; comments=None so that no line is silently skipped.
        return np.loadtxt(io.BytesIO(body), delimiter=",", comments=None, ndmin=2)
    except ValueError as error:
        raise BadRequest(f"malformed CSV: {error}") from None


def parse_json(body: bytes) -> np.ndarray:
    try:
        document = json.loads(body)
    except ValueError as error:
        raise BadRequest(f"malformed JSON: {error}") from None
    rows = document.get("instances") if isinstance(document, dict) else document
    if not isinstance(rows, list) or not rows or not all(isinstance(row, list) for row in rows):
        raise BadRequest('expected {"instances": [[feature, ...], ...]} or a list of rows')
    try:
        features = np.array(rows, dtype=np.float64)
    except (ValueError, TypeError) as error:
        raise BadRequest(f"rows must be lists of numbers, all of one length: {error}") from None
    if features.ndim != 2:
        raise BadRequest("each row must be a flat list of numbers")
    return features


def format_csv(predictions: np.ndarray) -> bytes:
    rows = predictions.tolist()
    if predictions.ndim == 1:
        return "".join(f"{value!r}\n" for value in rows).encode()
    return "".join(",".join(map(repr, row)) + "\n" for row in rows).encode()


def format_json(predictions: np.ndarray) -> bytes:
    return json.dumps({"predictions": predictions.tolist()}).encode()


PARSERS = {CSV: (parse_csv, format_csv, CSV), JSON: (parse_json, format_json, JSON)}


class InvocationsApp:
    """The ASGI application: /ping and /invocations over one loaded booster."""

    def __init__(self, booster: xgboost.Booster):
        self.booster = booster
        self.features = booster.num_features()

    def invoke(self, content_type: bytes, body: bytes) -> tuple[bytes, bytes]:
        """(response content type, response body) for one /invocations request."""
        if content_type not in PARSERS:
            problem = (f"unsupported Content-Type {content_type.decode('latin-1')!r}" if content_type
                       else "no Content-Type")
            raise BadRequest(f"{problem}: send text/csv or application/json", status=415)
        parse, format_predictions, response_type = PARSERS[content_type]
        features = parse(body)
        if features.shape[1] != self.features:
            raise BadRequest(f"each row must have {self.features} features; got {features.shape[1]}")
        return response_type, format_predictions(self.booster.inplace_predict(features))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if path == "/invocations":
            if method != "POST":
                return await respond(send, 405, TEXT, b"use POST\n", allow=b"POST")
            body = await read_body(receive)
            try:
                content_type, payload = self.invoke(media_type(scope["headers"]), body)
            except BadRequest as error:
                return await respond(send, error.status, TEXT, f"{error}\n".encode())
            return await respond(send, 200, content_type, payload)
        if path == "/ping":
            if method not in ("GET", "HEAD"):
                return await respond(send, 405, TEXT, b"use GET\n", allow=b"GET, HEAD")
            return await respond(send, 200, TEXT, b"")
        return await respond(send, 404, TEXT, b"not found: the paths are /ping and /invocations\n")


async def read_body(receive: Receive) -> bytes:
    message = await receive()
    body = message.get("body", b"")
    if not message.get("more_body"):
        return body
    chunks = [body]
    while message.get("more_body"):
        message = await receive()
        chunks.append(message.get("body", b""))
    return b"".join(chunks)


async def respond(send: Send, status: int, content_type: bytes, body: bytes, *, allow: bytes | None = None) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    if allow:
        headers.append((b"allow", allow))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def die_with_supervisor() -> None:
    """In a worker process: be killed when the supervisor dies. The supervisor's own parent-death signal (set by
    whoever started it) is not inherited across fork, so without this a killed supervisor leaves its workers
    serving, holding the port, the model's memory and the pinned CPUs."""
    supervisor = os.environ.get(SUPERVISOR_PID_ENV)
    if not supervisor:
        return
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise ConfigurationError(f"cannot set PR_SET_PDEATHSIG: {os.strerror(ctypes.get_errno())}")
    if os.getppid() != int(supervisor):  # it died before the signal was armed
        os._exit(1)


def app_from_environment() -> InvocationsApp:
    """The application of one worker process (uvicorn's factory)."""
    try:
        die_with_supervisor()
        settings = settings_from_environment()
        return InvocationsApp(load_booster(settings.model, settings.threads))
    except ConfigurationError as error:
        print(f"{LOG_PREFIX}: {error}", file=sys.stderr, flush=True)
        # The supervisor stops, rather than restarting, a worker that exits with this status.
        sys.exit(STARTUP_FAILURE)


def listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # Named TCP (not protocol 0) so that the event loop sets TCP_NODELAY on accepted connections: asyncio checks
    # the protocol number, and without it Nagle's algorithm holds the response body behind its headers for a
    # delayed ACK (40 ms per request).
    listener = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(2048)
    except OSError as error:
        listener.close()
        raise ConfigurationError(f"cannot listen on {host}:{port}: {error.strerror or error}") from None
    # Worker processes receive the listening socket from the supervisor.
    listener.set_inheritable(True)
    return listener


def uvicorn_config(app: InvocationsApp | str, workers: int) -> uvicorn.Config:
    return uvicorn.Config(
        app, factory=isinstance(app, str), workers=workers,
        http="httptools", loop="uvloop", lifespan="off",
        access_log=False, log_level="warning", proxy_headers=False, server_header=False,
    )


def startup_line(settings: Settings, booster: xgboost.Booster, listener: socket.socket) -> str:
    host, port = listener.getsockname()[:2]
    url_host = f"[{host}]" if ":" in host else host
    # The thread count is read back from XGBoost's own configuration, not from the environment.
    threads = json.loads(booster.save_config())["learner"]["generic_param"]["nthread"]
    return (f"{LOG_PREFIX}: model {settings.model} ({booster.num_boosted_rounds()} trees, "
            f"{booster.num_features()} features), workers {settings.workers}, threads {threads}, "
            f"listening on http://{url_host}:{port}")


def exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def main() -> None:
    try:
        settings = settings_from_environment()
        # Loaded here even when worker processes load their own copies: a bad model fails before the port opens.
        booster = load_booster(settings.model, settings.threads)
        listener = listen(settings.host, settings.port)
    except ConfigurationError as error:
        sys.exit(f"{LOG_PREFIX}: {error}")
    print(startup_line(settings, booster, listener), file=sys.stderr, flush=True)
    if settings.workers == 1:
        # uvicorn shuts down gracefully on SIGTERM/SIGINT, then raises the signal again with the handler it found.
        signal.signal(signal.SIGTERM, exit_cleanly)
        signal.signal(signal.SIGINT, exit_cleanly)
        uvicorn.Server(uvicorn_config(InvocationsApp(booster), 1)).run(sockets=[listener])
    else:
        del booster
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())  # the workers inherit it
        Multiprocess(uvicorn_config(APP_FACTORY, settings.workers), sockets=[listener]).run()


if __name__ == "__main__":
    main()
