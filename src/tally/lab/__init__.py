"""``tally lab``: small experiments that show a fundamental live, each printing
a measured table (docs/fundamentals.md links each one to the code it exercises).

- ``connections``: a thread per connection against one event loop, at many idle
  connections (the C10k problem);
- ``double-submit``: a double click with and without an idempotency key;
- ``batching``: one transaction per transfer against the batching writer.
"""
