#!/bin/sh
# The image's entrypoint: one image, four roles.
#   serve [server flags]     the server (default); flags override the TWOTOWER_* env
#   train [trainer flags]    e.g. train --config configs/synthetic.textproto --data_dir D --export_dir /bundles
#   synth [flags]            writes the synthetic dataset
#   client [client args]     e.g. client retrieve --user u00001 --k 10
#   healthcheck              gRPC health check of the local server (used by HEALTHCHECK)
# `exec` makes the binary PID 1, so SIGTERM reaches the server directly (it drains and
# exits 0).
set -e
role=${1:-serve}
[ $# -gt 0 ] && shift
case "$role" in
  serve)
    exec twotower_server --address="$TWOTOWER_ADDRESS" --admin_address="$TWOTOWER_ADMIN_ADDRESS" \
      --bundle="$TWOTOWER_BUNDLE" --index="$TWOTOWER_INDEX" "$@" ;;
  train) exec twotower_train "$@" ;;
  synth) exec twotower_synth "$@" ;;
  client) exec twotower_client "$@" ;;
  healthcheck)
    port=${TWOTOWER_ADDRESS##*:}
    exec twotower_client health --address="127.0.0.1:${port}" --timeout_ms=2000 ;;
  *)
    echo "usage: IMAGE [serve|train|synth|client|healthcheck] [flags...]" >&2
    exit 2 ;;
esac
