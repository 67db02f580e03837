#!/bin/sh
# Tally's container entrypoint. One image, three uses:
#
#   serve        (the default) tally serve, never migrating: migrations are a
#                one-shot of their own (compose's `migrate` service, the Kubernetes
#                Job), so N replicas starting at once never race to migrate, and a
#                replica on a schema it does not know refuses to start.
#   migrate      tally migrate, then exit (0: up to date).
#   healthcheck  exit 0 when /healthz answers 200 (the image's HEALTHCHECK; there
#                is no curl in the image, the standard library does it).
#
# Anything else runs as given (`tally tenants create ...`, `sh`), so the image is
# also the admin command line. Each branch execs, so the process gets the
# container's signals itself: SIGTERM lets requests in flight finish (10 s).
set -eu

healthcheck() {
  exec python3 - "${TALLY_PORT:-8000}" <<'PY'
import sys
import urllib.request

url = f"http://127.0.0.1:{sys.argv[1]}/healthz"
try:
    with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (a fixed local URL)
        sys.exit(0 if response.status == 200 else 1)
except OSError as exc:
    print(f"healthcheck: {url}: {exc}", file=sys.stderr)
    sys.exit(1)
PY
}

command=${1:-serve}
[ "$#" -gt 0 ] && shift
case "$command" in
  serve) exec tally serve --no-migrate "$@" ;;
  migrate) exec tally migrate "$@" ;;
  healthcheck) healthcheck ;;
  *) exec "$command" "$@" ;;
esac
