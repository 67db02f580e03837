"""``/graphql`` over WebSocket: the graphql-transport-ws protocol, server side.

The protocol (github.com/enisdenjo/graphql-ws, PROTOCOL.md), as Tally speaks it:

1. The client opens ``/graphql`` asking for the ``graphql-transport-ws``
   subprotocol (else: accepted, then closed with 4406).
2. It sends ``connection_init`` within TALLY_EVENTS_WS_AUTH_SECONDS (else
   4408), its credential in the payload (``{"authorization": "Bearer ..."}``,
   what a browser can send) or in the handshake's ``Authorization`` header.
   The server checks it as REST does, and answers ``connection_ack``, or
   closes with 4403 and the contract's code as the reason.
3. Each ``subscribe`` (``id``, ``payload``: query, variables, operationName)
   starts one operation: a subscription streams ``next`` messages, then
   ``complete``; a query answers one ``next``, then ``complete``. Mutations
   are refused here: they go over HTTP POST, where ``Idempotency-Key`` makes
   a retry safe. A document refused before it runs (a syntax error, a limit,
   an unknown field) answers ``error``. ``complete`` from the client stops
   an operation.
4. ``ping``/``pong`` either way. The server pings every
   TALLY_EVENTS_HEARTBEAT_SECONDS, so proxies see traffic on a quiet socket.

Each ``subscribe`` is admitted as an HTTP request is: the credential read again
(a key revoked since ``connection_init`` is refused at the next operation, and
the connection closed), a token from the caller's rate-limit bucket, each
field's scope, the same document limits as over HTTP. At most
``OPERATIONS_MAX`` operations run at once on one connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from graphql import GraphQLError, OperationType
from starlette.datastructures import Headers
from starlette.types import Message, Receive, Scope, Send
from strawberry.types.execution import ExecutionResult, PreExecutionError
from strawberry.types.graphql import OperationType as StrawberryOperation

from tally.api.graphql.context import Context, Loaders
from tally.api.graphql.errors import error_json, result_json, tally_error_json
from tally.api.graphql.limits import Limits, checked_operation
from tally.api.graphql.schema import Schema
from tally.api.streams import admit_socket
from tally.errors import RateLimited, TallyError, Unauthenticated, Unavailable
from tally.identity import Principal
from tally.services import Services
from tally.support.ids import new_id

log = logging.getLogger(__name__)

PROTOCOL = "graphql-transport-ws"
OPERATIONS_MAX = 16
ID_CHARS_MAX = 128

# The protocol's close codes (PROTOCOL.md).
INVALID_MESSAGE = 4400
UNAUTHORIZED = 4401  # subscribe before connection_ack
FORBIDDEN = 4403  # connection_init refused
SUBPROTOCOL_NOT_ACCEPTABLE = 4406
INIT_TIMEOUT = 4408
DUPLICATE_ID = 4409
TOO_MANY_INITS = 4429
NORMAL = 1000
# The client does not read what it is sent (RFC 6455 §7.4.1: policy violation).
NOT_READING = 1008
TRY_AGAIN_LATER = 1013  # IANA's WebSocket close code registry

_ALLOWED = (StrawberryOperation.QUERY, StrawberryOperation.SUBSCRIPTION)


class _Closed(Exception):
    """The connection is over: close it with this code and reason."""

    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason


class GraphQLSocket:
    """The ASGI app of ``/graphql``'s WebSocket scope."""

    def __init__(self, services: Services, schema: Schema, limits: Limits) -> None:
        self._services = services
        self._schema = schema
        self._limits = limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if PROTOCOL not in scope.get("subprotocols", ()):
            await send({"type": "websocket.accept"})
            reason = f"Subprotocol not acceptable: ask for {PROTOCOL}"
            await send(
                {"type": "websocket.close", "code": SUBPROTOCOL_NOT_ACCEPTABLE, "reason": reason}
            )
            return
        await send({"type": "websocket.accept", "subprotocol": PROTOCOL})
        await _Connection(self, scope, receive, send).run()


class _Connection:
    def __init__(self, socket: GraphQLSocket, scope: Scope, receive: Receive, send: Send) -> None:
        self.services = socket._services
        self.schema = socket._schema
        self.limits = socket._limits
        self.receive = receive
        self._send = send
        self._sending = asyncio.Lock()
        client = scope.get("client")
        self.address: str | None = client[0] if client else None
        self.authorization = Headers(scope=scope).get("authorization")
        self.acknowledged = False
        self.closed = False
        self.operations: dict[str, asyncio.Task[None]] = {}

    async def run(self) -> None:
        settings = self.services.settings
        pinger = asyncio.create_task(self._ping(settings.events_heartbeat_seconds))
        try:
            await self._init(settings.events_ws_auth_seconds)
            while True:
                message = await self.receive()
                if message["type"] == "websocket.disconnect":
                    return
                await self._handle(_parse(message))
        except _Closed as closed:
            with contextlib.suppress(OSError):
                await self.close(closed.code, closed.reason)
        except OSError:
            pass  # the client left mid-write
        finally:
            pinger.cancel()
            for task in list(self.operations.values()):
                task.cancel()
            for task in list(self.operations.values()):
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    # -- connection_init ------------------------------------------------------------------

    async def _init(self, wait_seconds: float) -> None:
        try:
            async with asyncio.timeout(wait_seconds):
                message = await self.receive()
        except TimeoutError:
            raise _Closed(INIT_TIMEOUT, "Connection initialisation timeout") from None
        if message["type"] == "websocket.disconnect":
            raise _Closed(NORMAL, "")
        body = _parse(message)
        if body["type"] != "connection_init":
            if body["type"] == "subscribe":
                raise _Closed(UNAUTHORIZED, "Unauthorized")
            raise _Closed(INVALID_MESSAGE, "Send connection_init first")
        payload = body.get("payload")
        if payload is not None and not isinstance(payload, dict):
            raise _Closed(INVALID_MESSAGE, "connection_init's payload must be an object")
        given = (payload or {}).get("authorization") or (payload or {}).get("Authorization")
        if given is not None:
            if not isinstance(given, str):
                raise _Closed(INVALID_MESSAGE, "authorization must be a string")
            self.authorization = given
        await self.admit(init=True)
        self.acknowledged = True
        await self.send({"type": "connection_ack"})

    async def admit(self, *, init: bool = False) -> Principal:
        """The caller, as at connection_init and again at each subscribe. A refused
        credential ends the connection (4403, the contract's code as the reason); a
        passing refusal (rate limited, the database away) ends it at connection_init
        (1013, try again later) and refuses only the operation after it."""
        try:
            if self.authorization is None:
                raise Unauthenticated("Send a credential in connection_init's payload.")
            return await admit_socket(self.services, self.authorization, self.address)
        except (RateLimited, Unavailable) as passing:
            if init:
                raise _Closed(TRY_AGAIN_LATER, passing.code) from None
            raise
        except TallyError as error:
            raise _Closed(FORBIDDEN, error.code) from None

    # -- messages after the ack -----------------------------------------------------------

    async def _handle(self, body: dict[str, Any]) -> None:
        kind = body["type"]
        if kind == "ping":
            await self.send({"type": "pong"})
        elif kind == "pong":
            pass
        elif kind == "connection_init":
            raise _Closed(TOO_MANY_INITS, "Too many initialisation requests")
        elif kind == "subscribe":
            await self._subscribe(body)
        elif kind == "complete":
            task = self.operations.get(_id(body))
            if task is not None:
                task.cancel()
        else:
            raise _Closed(INVALID_MESSAGE, f"Unknown message type {str(kind)[:40]!r}")

    async def _subscribe(self, body: dict[str, Any]) -> None:
        op_id = _id(body)
        if op_id in self.operations:
            raise _Closed(DUPLICATE_ID, f"Subscriber for {op_id} already exists")
        payload = body.get("payload")
        if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
            raise _Closed(INVALID_MESSAGE, "subscribe's payload must hold a query string")
        variables = payload.get("variables") or {}
        name = payload.get("operationName")
        if not isinstance(variables, dict) or not (name is None or isinstance(name, str)):
            raise _Closed(INVALID_MESSAGE, "variables must be an object, operationName a string")
        if len(self.operations) >= OPERATIONS_MAX:
            refusal = GraphQLError(
                f"At most {OPERATIONS_MAX} operations run at once on one connection: "
                "complete one first.",
                extensions={"code": "validation_error", "limit": "operations"},
            )
            await self.send({"id": op_id, "type": "error", "payload": [error_json(refusal)]})
            return
        try:
            principal = await self.admit()
        except (RateLimited, Unavailable) as passing:
            await self.send({"id": op_id, "type": "error", "payload": [tally_error_json(passing)]})
            return
        try:
            operation = checked_operation(
                payload["query"], name, variables, self.limits,
                self.services.settings.graphql_tokens_max,
            )  # fmt: skip
        except GraphQLError as error:
            await self.send({"id": op_id, "type": "error", "payload": [error_json(error)]})
            return
        if operation.operation is OperationType.MUTATION:
            refusal = GraphQLError(
                "Mutations go over HTTP POST /graphql, with an Idempotency-Key header so "
                "that a retry is safe; this socket runs queries and subscriptions.",
                extensions={"code": "validation_error"},
            )
            await self.send({"id": op_id, "type": "error", "payload": [error_json(refusal)]})
            return
        ctx = Context(
            services=self.services,
            principal=principal,
            request_id=new_id("req"),
            client_address=self.address,
            claim=None,
            loaders=Loaders(self.services, principal.tenant_id),
        )
        self.operations[op_id] = asyncio.create_task(
            self._operate(op_id, payload["query"], variables, name, ctx),
            name="tally-graphql-operation",
        )

    async def _operate(
        self, op_id: str, query: str, variables: dict[str, Any], name: str | None, ctx: Context
    ) -> None:
        """One operation: its results as ``next`` messages, then ``complete``."""
        try:
            results = await self.schema.stream(
                query,
                variable_values=variables,
                context_value=ctx,
                operation_name=name,
                allowed_operation_types=_ALLOWED,
            )
            async with contextlib.aclosing(results):
                async for result in results:
                    if isinstance(result, PreExecutionError):
                        errors = [error_json(e) for e in result.errors or []]
                        await self.send({"id": op_id, "type": "error", "payload": errors})
                        return
                    # @defer and @stream are not in the schema: no incremental frames.
                    assert isinstance(result, ExecutionResult)
                    payload = result_json(result.data, result.errors)
                    await self.send({"id": op_id, "type": "next", "payload": payload})
            await self.send({"id": op_id, "type": "complete"})
        except asyncio.CancelledError:
            raise  # the client completed it, or the connection is closing
        except _Closed as closed:  # the client does not read: end the whole connection
            with contextlib.suppress(OSError):
                await self.close(closed.code, closed.reason)
        except OSError:
            pass
        except Exception:
            log.exception("unhandled error in a GraphQL operation over WebSocket")
        finally:
            self.operations.pop(op_id, None)

    # -- writes ---------------------------------------------------------------------------

    async def send(self, body: dict[str, Any]) -> None:
        """One message, whole (operations send concurrently); a client that does
        not take it within TALLY_EVENTS_SEND_TIMEOUT_SECONDS is not reading."""
        if self.closed:
            return
        text = json.dumps(body, separators=(",", ":"))
        try:
            async with (
                self._sending,
                asyncio.timeout(self.services.settings.events_send_timeout_seconds),
            ):
                await self._send({"type": "websocket.send", "text": text})
        except TimeoutError:
            raise _Closed(NOT_READING, "The client does not read its messages") from None

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})

    async def _ping(self, every_seconds: float) -> None:
        try:
            while True:
                await asyncio.sleep(every_seconds)
                if self.acknowledged:
                    await self.send({"type": "ping"})
        except _Closed as closed:
            with contextlib.suppress(OSError):
                await self.close(closed.code, closed.reason)
        except OSError:
            pass


def _parse(message: Message) -> dict[str, Any]:
    """A client message: a JSON object with a string ``type`` (else 4400)."""
    text = message.get("text")
    if text is None and message.get("bytes") is not None:
        raise _Closed(INVALID_MESSAGE, "Send text messages")
    try:
        body = json.loads(text or "")
    except ValueError:
        raise _Closed(INVALID_MESSAGE, "Invalid message received: not JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("type"), str):
        raise _Closed(INVALID_MESSAGE, "Invalid message received: no type")
    return body


def _id(body: dict[str, Any]) -> str:
    op_id = body.get("id")
    if not isinstance(op_id, str) or not 0 < len(op_id) <= ID_CHARS_MAX:
        raise _Closed(INVALID_MESSAGE, f"id must be a string of 1-{ID_CHARS_MAX} characters")
    return op_id
