#!/usr/bin/env bash
# Fetch the Gateway API and Gateway API Inference Extension CRDs that the Deployment reconciler writes to
# (HTTPRoute, InferencePool) from their published Go modules, through the Go module proxy, and cache them:
#
#   ${LLMOPS_CACHE:-~/.cache/llmops}/crds/sigs.k8s.io/gateway-api@<version>/
#       gateway.networking.k8s.io_{gatewayclasses,gateways,httproutes,referencegrants,grpcroutes}.yaml
#       (the standard channel, config/crd/standard in the module)
#   ${LLMOPS_CACHE:-~/.cache/llmops}/crds/sigs.k8s.io/gateway-api-inference-extension@<version>/
#       inference.networking.k8s.io_inferencepools.yaml (InferencePool, apiVersion inference.networking.k8s.io/v1)
#
# Prints the two directories on stdout, one per line (`kubectl apply --server-side -f DIR` each); everything
# else goes to stderr. A warm run only checks the stamp files: no go command, no network.
# Versions: GATEWAY_API_VERSION, INFERENCE_EXTENSION_VERSION (exact versions: the proxy here serves no version
# lists). Needs `go` on PATH (as tests/cluster/build.sh does); nothing is built.
set -euo pipefail

GATEWAY_API_VERSION="${GATEWAY_API_VERSION:-v1.6.3}"
INFERENCE_EXTENSION_VERSION="${INFERENCE_EXTENSION_VERSION:-v1.2.1}" # InferencePool v1 is GA since v1.0.0
CACHE="${LLMOPS_CACHE:-$HOME/.cache/llmops}/crds"

GATEWAY_FILES=()
for kind in gatewayclasses gateways httproutes referencegrants grpcroutes; do
  GATEWAY_FILES+=("config/crd/standard/gateway.networking.k8s.io_${kind}.yaml")
done
POOL_FILES=(config/crd/bases/inference.networking.k8s.io_inferencepools.yaml)

log() { echo "fetch-gateway-crds.sh: $*" >&2; }

# fetch MODULE VERSION FILE... : copy FILEs (paths inside the module) to $CACHE/MODULE@VERSION, print that dir.
fetch() {
  local module="$1" version="$2" dest out dir work f
  shift 2
  dest="${CACHE}/${module}@${version}"
  if [[ -f "${dest}/.complete" ]]; then
    echo "${dest}"
    return
  fi
  mkdir -p "${CACHE}"
  # Serialise concurrent first runs (parallel test sessions) on one cache.
  exec 9>"${CACHE}/.lock"
  flock 9
  if [[ ! -f "${dest}/.complete" ]]; then
    # Outside any module, so the caller's go.mod/go.work cannot take part; never switch toolchains.
    if ! out="$(cd / && GOTOOLCHAIN=local GOFLAGS=-mod=mod GOWORK=off go mod download -json "${module}@${version}")"; then
      log "go mod download ${module}@${version} failed:"
      echo "${out}" >&2
      exit 1
    fi
    dir="$(sed -n 's/^\s*"Dir": "\(.*\)",$/\1/p' <<<"${out}")"
    [[ -d "${dir}" ]] || { log "no module directory in: ${out}"; exit 1; }
    work="$(mktemp -d "${CACHE}/.partial.XXXXXX")"
    chmod 0755 "${work}"
    for f in "$@"; do
      # The module cache is read-only; the copies need not be.
      install -m 0644 "${dir}/${f}" "${work}/$(basename "${f}")"
    done
    echo "${module}@${version}" >"${work}/.complete"
    rm -rf "${dest}"
    mkdir -p "$(dirname "${dest}")"
    mv "${work}" "${dest}"
    log "cached $# CRD file(s) of ${module}@${version}"
  fi
  exec 9>&-
  echo "${dest}"
}

fetch sigs.k8s.io/gateway-api "${GATEWAY_API_VERSION}" "${GATEWAY_FILES[@]}"
fetch sigs.k8s.io/gateway-api-inference-extension "${INFERENCE_EXTENSION_VERSION}" "${POOL_FILES[@]}"
