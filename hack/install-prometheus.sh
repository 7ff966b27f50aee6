#!/usr/bin/env bash
# Install a real Prometheus server for the canary-analysis integration tests, from Debian's `prometheus`
# package (the only network a CI machine has is the package registries).
# Idempotent: does nothing when `prometheus` is already on PATH (or at /usr/bin/prometheus).
# The tests start their own server (own --config.file, --storage.tsdb.path, --web.listen-address on
# 127.0.0.1), so the packaged service is kept from starting: a policy-rc.d that denies service starts is
# in place during the install (the Debian mechanism for chroots and containers, where no init runs).
set -euo pipefail

if command -v prometheus >/dev/null 2>&1 || [[ -x /usr/bin/prometheus ]]; then
  exit 0
fi

SUDO=()
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
  else
    echo "install-prometheus: not root and no sudo; install Debian's prometheus package by hand" >&2
    exit 1
  fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: no apt-get; install a Prometheus server (2.x) on PATH by hand" >&2
  exit 1
fi

POLICY=/usr/sbin/policy-rc.d
added_policy=false
if [[ ! -e $POLICY ]]; then
  printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$POLICY" >/dev/null
  "${SUDO[@]}" chmod 0755 "$POLICY"
  added_policy=true
fi
cleanup() { if $added_policy; then "${SUDO[@]}" rm -f "$POLICY"; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
prometheus --version 2>&1 | head -1
