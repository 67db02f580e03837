"""The one table from contract codes to gRPC statuses, and what a refusal carries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grpc
from google.rpc import error_details_pb2, status_pb2

from tally.api.problems import STATUS as HTTP_STATUS
from tally.errors import CODES, FieldError, RateLimited, ValidationFailed
from tally.grpc.service import _peer_address
from tally.grpc.status import STATUS, Refusal, grpc_status

ROOT = Path(__file__).resolve().parents[3]


def test_every_code_of_the_error_tree_has_a_grpc_status() -> None:
    assert set(STATUS) == CODES | {"stream_overflow"}
    assert set(HTTP_STATUS) <= set(STATUS)  # gRPC says everything REST can


def test_statuses_follow_what_the_caller_can_do_about_them() -> None:
    C = grpc.StatusCode
    # By HTTP class: each class of the contract lands on the gRPC codes made for it.
    allowed = {
        400: {C.INVALID_ARGUMENT},
        401: {C.UNAUTHENTICATED},
        403: {C.PERMISSION_DENIED},
        404: {C.NOT_FOUND},
        409: {C.ALREADY_EXISTS, C.ABORTED, C.FAILED_PRECONDITION},
        412: {C.FAILED_PRECONDITION},
        422: {C.INVALID_ARGUMENT, C.FAILED_PRECONDITION},
        429: {C.RESOURCE_EXHAUSTED},
        503: {C.UNAVAILABLE},
    }
    for code, (status, _) in HTTP_STATUS.items():
        if status in allowed:
            assert STATUS[code] in allowed[status], code


def _details(status: grpc.Status) -> tuple[status_pb2.Status, dict[str, str | bytes]]:
    metadata = dict(status.trailing_metadata)
    decoded = status_pb2.Status.FromString(metadata["grpc-status-details-bin"])
    return decoded, metadata


def test_a_rate_limited_refusal_says_when_to_retry() -> None:
    error = RateLimited("Slow down.", retry_after_seconds=3, metadata={"RateLimit-Limit": "5"})
    status = grpc_status(Refusal.of(error), "req_1")
    assert status.code is grpc.StatusCode.RESOURCE_EXHAUSTED
    decoded, metadata = _details(status)
    info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
    assert decoded.details[0].Unpack(info) and decoded.details[1].Unpack(retry)
    assert (info.reason, info.domain, info.metadata["request_id"]) == (
        "rate_limited",
        "tally",
        "req_1",
    )
    assert retry.retry_delay.seconds == 3
    assert metadata["tally-code"] == "rate_limited" and metadata["ratelimit-limit"] == "5"
    assert metadata["retry-after"] == "3"


def test_a_validation_error_names_each_field() -> None:
    error = ValidationFailed([FieldError("amount", "out_of_range", "amount must be 1 or more.")])
    decoded, _ = _details(grpc_status(Refusal.of(error), None))
    bad = error_details_pb2.BadRequest()
    assert decoded.details[1].Unpack(bad)
    (violation,) = bad.field_violations
    assert (violation.field, violation.reason) == ("amount", "out_of_range")


def test_the_peer_address_is_read_from_grpcs_peer_string() -> None:
    assert _peer_address("ipv4:127.0.0.1:50123") == "127.0.0.1"
    assert _peer_address("ipv6:[::1]:50123") == "::1"
    assert _peer_address("unix:/tmp/socket") is None
    assert _peer_address(None) is None


def test_the_committed_generated_code_matches_the_proto() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
