"""The gRPC entry point: ``tally.v1.Ledger`` (proto/tally/v1/ledger.proto, docs/grpc.md).

A thin adapter beside REST, like GraphQL: it admits callers with
``Services.admit``, checks scopes with REST's ``require_scope``, reads
idempotency keys with REST's parser, validates messages through REST's request
Structs, builds the same commands (``api.routes``), answers writes with REST's
answers (so a keyed call stores and replays the contract's response), streams
events with REST's pump, and maps the one error tree to gRPC status codes in one
table (``status.STATUS``). The server runs in the HTTP app's process and loop
(``server.GrpcServer``), on its own port.
"""
