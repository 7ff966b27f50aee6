#!/usr/bin/env bash
# Build the control-plane binaries the test cluster needs (like controller-runtime's envtest
# assets, plus a scheduler, a controller-manager and kwok), from Go modules through the Go
# module proxy, and cache them under ${LLMOPS_K8S_CACHE:-$HOME/.cache/llmops/k8s}/<k8s>/bin.
#
# Prints the bin directory as the last line of stdout; everything else goes to stderr.
# A second run with a warm cache only checks the stamp file and exits in well under a second.
#
# Versions can be overridden with K8S_VERSION, ETCD_VERSION and KWOK_VERSION.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.34.4}"   # newest 1.34 patch on proxy.golang.org when written
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}" # newest 3.6 patch
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"

CACHE="${LLMOPS_K8S_CACHE:-$HOME/.cache/llmops/k8s}/${K8S_VERSION}"
BIN="${CACHE}/bin"
STAMP="${BIN}/.versions"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler etcd kwok)
WANT="kubernetes=${K8S_VERSION} etcd=${ETCD_VERSION} kwok=${KWOK_VERSION} goos=$(go env GOOS) goarch=$(go env GOARCH)"

log() { echo "build.sh: $*" >&2; }

cached() {
  [[ -f "${STAMP}" && "$(cat "${STAMP}")" == "${WANT}" ]] || return 1
  local b
  for b in "${BINARIES[@]}"; do [[ -x "${BIN}/${b}" ]] || return 1; done
}

if cached; then
  log "cache hit (${WANT})"
  echo "${BIN}"
  exit 0
fi

mkdir -p "${CACHE}"
# Serialise concurrent builds (parallel test runs) on one cache directory.
exec 9>"${CACHE}/.lock"
flock 9
if cached; then echo "${BIN}"; exit 0; fi

# -mod=mod lets `go build` fill in go.mod/go.sum of the wrapper modules below.
# GOTOOLCHAIN=local: never download another toolchain behind the user's back.
export GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
STAGE="${CACHE}/bin.partial"
rm -rf "${STAGE}"
mkdir -p "${STAGE}"

# wrapper_module DIR MODULE VERSION REPLACE_VERSION
# `go install MODULE/cmd@VERSION` is refused when MODULE's go.mod has replace directives
# (k8s.io/kubernetes points at ./staging/..., etcd's server at ../api etc.). Instead, make a
# throwaway main module that requires MODULE and replaces each of those local paths with the
# published module at REPLACE_VERSION (k8s staging modules are tagged v0.<minor>.<patch>).
# The Go language version and godebug defaults are copied so the binaries behave as upstream's.
wrapper_module() {
  local dir="$1" mod="$2" ver="$3" repver="$4" gomod goline godebug
  # Run outside any module so the caller's cwd cannot influence resolution.
  gomod="$(cd "${CACHE}" && go mod download -json "${mod}@${ver}" | sed -n 's/^\s*"GoMod": "\(.*\)",$/\1/p')"
  goline="$(sed -n 's/^go \(.*\)$/\1/p' "${gomod}")"
  godebug="$(sed -n 's/^godebug \(.*\)$/\1/p' "${gomod}")"
  rm -rf "${dir}"
  mkdir -p "${dir}"
  {
    echo "module llmops.local/build/$(basename "${dir}")"
    echo "go ${goline}"
    [[ -z "${godebug}" ]] || echo "godebug ${godebug}"
    echo "require ${mod} ${ver}"
  } >"${dir}/go.mod"
  # Replace lines look like "\tk8s.io/api => ./staging/src/k8s.io/api" (inside a block) or
  # "replace go.etcd.io/etcd/api/v3 => ../api"; only local-path targets need rewriting. etcd also
  # has "replace go.etcd.io/etcd => ./FORBIDDEN_DEPENDENCY" guards, which are not real modules.
  local target
  while read -r target; do
    (cd "${dir}" && go mod edit -replace="${target}=${target}@${repver}")
  done < <(grep -v FORBIDDEN_DEPENDENCY "${gomod}" |
    sed -nE 's#^(replace)?[[:space:]]*([^[:space:]]+)[[:space:]]+=>[[:space:]]+\.\.?/.*#\2#p')
}

now_us() { echo "${EPOCHREALTIME/./}"; }
since() { # since START_US -> "12.3s"
  local d=$(($(now_us) - $1))
  printf '%d.%ds' $((d / 1000000)) $((d / 100000 % 10))
}
timed() { # timed LABEL CMD... : run CMD, log its wall time
  local label="$1" t0
  t0=$(now_us)
  shift
  "$@"
  log "$(printf '%-50s %s' "${label}" "$(since "${t0}")")"
}

SRC="${CACHE}/src"
TOTAL0=$(now_us)

# --- kube-apiserver, kube-controller-manager, kube-scheduler: one `go build` so the shared
# k8s.io/* packages are compiled once.
minor="$(cut -d. -f2 <<<"${K8S_VERSION}")"
staging="v0.${K8S_VERSION#v1.}"
build_date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
kube_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  kube_ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION} -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
  kube_ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
done
timed "resolve k8s.io/kubernetes ${K8S_VERSION}" \
  wrapper_module "${SRC}/kubernetes" k8s.io/kubernetes "${K8S_VERSION}" "${staging}"
timed "build kube-apiserver/controller-manager/scheduler" \
  bash -c 'cd "$1" && go build -trimpath -ldflags "$2" -o "$3/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler' _ "${SRC}/kubernetes" "${kube_ldflags}" "${STAGE}"

# --- etcd: the main package of go.etcd.io/etcd/server/v3 is the etcd binary.
timed "resolve go.etcd.io/etcd/server/v3 ${ETCD_VERSION}" \
  wrapper_module "${SRC}/etcd" go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" "${ETCD_VERSION}"
timed "build etcd" \
  bash -c 'cd "$1" && go build -trimpath -ldflags "-s -w" -o "$2/etcd" go.etcd.io/etcd/server/v3' \
  _ "${SRC}/etcd" "${STAGE}"

# --- kwok: no replace directives, so a plain `go install` works (it rejects -mod=mod).
timed "build kwok ${KWOK_VERSION}" \
  env GOBIN="${STAGE}" GOFLAGS=-buildvcs=false go install -trimpath \
  -ldflags "-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}" \
  "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"

# Publish atomically-ish: binaries first, stamp last, so an interrupted build is never "cached".
mkdir -p "${BIN}"
rm -f "${STAMP}"
for b in "${BINARIES[@]}"; do mv -f "${STAGE}/${b}" "${BIN}/${b}"; done
rm -rf "${STAGE}"
echo "${WANT}" >"${STAMP}"
log "$(printf '%-50s %s' total "$(since "${TOTAL0}")")"
echo "${BIN}"
