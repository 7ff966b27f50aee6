#!/usr/bin/env bash
# The example lifecycle (examples/lifecycle/) on a real Kubernetes cluster: kind, in Docker.
#
#   make kind-e2e                      # or hack/kind-e2e.sh
#   hack/kind-e2e.sh --dry-run         # (or DRY_RUN=1) print every command, run none; needs no docker or kind
#
# Creates (or reuses) the kind cluster $KIND_CLUSTER, builds the operator, trainer (CPU) and server (CPU) images
# from images/, loads them into the node, installs the Helm chart pointed at them with a PVC as artifact root,
# applies the example resources, waits for each in order and asks the served model for a completion.
# A dry run still renders the chart with `helm template` (the same values), so the values are checked.
#
# Environment: KIND_CLUSTER (llmops-e2e), E2E_NAMESPACE (llmops-e2e, where the examples and their PVC live),
# IMAGE_TAG (e2e), LOCAL_PORT (18000, for the port-forward), KIND_E2E_WORKDIR (a directory to keep the generated
# values and manifests in; default a temporary one, removed at the end), HELM and KUBECTL (the binaries; default
# the ones `make setup` puts into .venv/bin, as the tests use, else from PATH).
# Bash 3.2 compatible (macOS' /bin/bash).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CHART="$ROOT/charts/llmops-operator"
EXAMPLES="$ROOT/examples/lifecycle"

DRY_RUN=${DRY_RUN:-0}
for arg in "$@"; do
  case $arg in
    --dry-run) DRY_RUN=1 ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) echo "kind-e2e: unknown argument '$arg' (try --help)" >&2; exit 2 ;;
  esac
done
[ "$DRY_RUN" = 0 ] || DRY_RUN=1

CLUSTER=${KIND_CLUSTER:-llmops-e2e}
KUBE_CONTEXT="kind-$CLUSTER"          # the context `kind create cluster` writes; every command names it
NAMESPACE=${E2E_NAMESPACE:-llmops-e2e}
OPERATOR_NAMESPACE=llmops-system
RELEASE=llmops
OPERATOR_DEPLOYMENT="$RELEASE-llmops-operator"   # the chart's fullname for release "llmops"
TAG=${IMAGE_TAG:-e2e}
OPERATOR_IMAGE="llmops/operator:$TAG"
TRAINER_IMAGE="llmops/trainer:$TAG"
SERVER_IMAGE="llmops/server:$TAG"
CLAIM=llmops-artifacts                # the chart's artifactRoot is pvc://$CLAIM
INPUTS="e2e-inputs/lifecycle"         # where the examples' data files go inside the claim
LOADER=llmops-e2e-inputs              # the short-lived pod that copies them there
LOCAL_PORT=${LOCAL_PORT:-18000}
SERVER_PORT=8000                      # the Deployment's spec.server.port (default)
MODEL=tiny-shakespeare                # served model name: the Deployment's name (operator/reconcile/serving)

# --- Printing and running -----------------------------------------------------------------------------------

dry() { [ "$DRY_RUN" = 1 ]; }

# Print a command as `+ cmd arg ...`, quoting arguments a shell would need quoted.
show() {
  local out="" arg
  for arg in "$@"; do
    case $arg in
      '' | *[!A-Za-z0-9_./:=@%+,-]*) out="$out '${arg//\'/\'\\\'\'}'" ;;
      *) out="$out $arg" ;;
    esac
  done
  printf '+%s\n' "$out"
}

# Print the command; run it unless this is a dry run.
run() {
  show "$@"
  dry || "$@"
}

step() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind-e2e: error: %s\n' "$*" >&2; exit 1; }

# The binary `make setup` put into .venv/bin (the versions the tests use), else the one on PATH.
tool() {
  if [ -x "$ROOT/.venv/bin/$1" ]; then echo "$ROOT/.venv/bin/$1"
  elif command -v "$1" >/dev/null 2>&1; then echo "$1"
  fi
}
HELM=${HELM:-$(tool helm)}
KUBECTL=${KUBECTL:-$(tool kubectl)}

kube() { run "${KUBECTL:-kubectl}" --context "$KUBE_CONTEXT" "$@"; }
kube_ns() { kube -n "$NAMESPACE" "$@"; }
# kubectl for reading only, quiet, never printed (status polls); nothing in a dry run.
peek() { dry || "$KUBECTL" --context "$KUBE_CONTEXT" -n "$NAMESPACE" "$@" 2>/dev/null || true; }

# --- Preflight ------------------------------------------------------------------------------------------------

[ -n "$HELM" ] || die "helm not found: run \`make setup\` (installs it into .venv/bin) or put helm on PATH"
if ! dry; then
  command -v docker >/dev/null 2>&1 || die "docker not found on PATH. Install Docker Engine \
(https://docs.docker.com/engine/install/) or Docker Desktop (https://docs.docker.com/desktop/)."
  command -v kind >/dev/null 2>&1 || die "kind not found on PATH. Install it: \`go install sigs.k8s.io/kind@latest\`, \
\`brew install kind\`, or a release binary (https://kind.sigs.k8s.io/docs/user/quick-start/#installation)."
  [ -n "$KUBECTL" ] || die "kubectl not found: run \`make setup\` (installs it into .venv/bin) or put kubectl on PATH"
  command -v curl >/dev/null 2>&1 || die "curl not found on PATH"
  docker info >/dev/null 2>&1 || die "docker is installed but its daemon does not answer (\`docker info\` fails): \
start Docker, or check that your user may use it"
fi

if [ -n "${KIND_E2E_WORKDIR:-}" ]; then
  WORK=$KIND_E2E_WORKDIR
  mkdir -p "$WORK"
  KEEP_WORK=1
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/kind-e2e.XXXXXX")
  KEEP_WORK=0
fi

CLUSTER_UP=0
PORT_FORWARD_PID=""

diagnose() {
  local k=("$KUBECTL" --context "$KUBE_CONTEXT")
  printf '\n==> kind-e2e failed; the state of the cluster:\n' >&2
  echo "--- kubectl get llmops -A" >&2
  "${k[@]}" get llmops -A -o wide >&2 || true
  echo "--- kubectl -n $NAMESPACE describe llmops" >&2
  "${k[@]}" -n "$NAMESPACE" describe llmops >&2 || true
  echo "--- kubectl -n $NAMESPACE get pods,jobs,pvc" >&2
  "${k[@]}" -n "$NAMESPACE" get pods,jobs,pvc -o wide >&2 || true
  echo "--- workload pod logs (last 40 lines each)" >&2
  "${k[@]}" -n "$NAMESPACE" logs -l app.kubernetes.io/managed-by=llmops-operator --all-containers --prefix \
    --tail=40 --max-log-requests=20 >&2 || true
  echo "--- operator logs" >&2
  "${k[@]}" -n "$OPERATOR_NAMESPACE" describe pods -l app.kubernetes.io/instance="$RELEASE" >&2 || true
  "${k[@]}" -n "$OPERATOR_NAMESPACE" logs "deployment/$OPERATOR_DEPLOYMENT" --all-containers --tail=200 >&2 || true
}

on_exit() {
  local status=$?
  if [ -n "$PORT_FORWARD_PID" ]; then kill "$PORT_FORWARD_PID" 2>/dev/null || true; fi
  if [ "$status" != 0 ] && [ "$CLUSTER_UP" = 1 ] && ! dry; then diagnose; fi
  if [ "$KEEP_WORK" = 0 ]; then rm -rf "$WORK"; fi
  exit "$status"
}
trap on_exit EXIT

# Wait for a condition, in 60 s slices so that a resource which Failed stops the wait at once instead of at the
# timeout (a dry run prints the wait as one command).
wait_for() {  # RESOURCE CONDITION TIMEOUT_SECONDS
  local resource=$1 condition=$2 timeout=$3 deadline phase
  show "${KUBECTL:-kubectl}" --context "$KUBE_CONTEXT" -n "$NAMESPACE" wait --for=condition="$condition" \
    "$resource" --timeout="${timeout}s"
  dry && return 0
  deadline=$((SECONDS + timeout))
  until "$KUBECTL" --context "$KUBE_CONTEXT" -n "$NAMESPACE" wait --for=condition="$condition" "$resource" \
      --timeout=60s >/dev/null 2>&1; do
    phase=$(peek get "$resource" -o jsonpath='{.status.phase}')
    [ "$phase" != Failed ] || die "$resource Failed: $(peek get "$resource" \
      -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}{.reason}: {.message}{end}')"
    [ "$SECONDS" -lt "$deadline" ] || die "$resource: no $condition condition within ${timeout}s (phase ${phase:-?})"
    echo "    $resource: ${phase:-no status yet} $(peek get "$resource" -o jsonpath='{.status.progress.percent}') \
($((deadline - SECONDS))s left)"
    sleep 2   # when kubectl wait failed at once (the resource not there yet)
  done
  echo "    $resource: $condition"
}

# --- Generated files: values, storage, patched manifests ---------------------------------------------------------

# The chart's values for kind (keys: charts/llmops-operator/values.yaml, checked by values.schema.json). The
# images exist only in the kind node: the operator's pull policy is Never so a missing load fails loudly instead
# of trying Docker Hub; the operator gives workloads IfNotPresent (the default of a resource's spec.image), which
# finds the loaded tag. No GPUs in kind: the "CUDA" trainer is the CPU one too. No Gateway API in kind: the
# replica-ratio traffic router (and no HTTPRoute permissions). The pod annotation changes with the operator
# image's ID, so re-running after a rebuild rolls the operator.
write_values() {  # OPERATOR_IMAGE_ID
  cat >"$WORK/values.yaml" <<EOF
image:
  repository: ${OPERATOR_IMAGE%:*}
  tag: "$TAG"
  pullPolicy: Never
replicaCount: 1
workloadImages:
  trainer: $TRAINER_IMAGE
  trainerCuda: $TRAINER_IMAGE
  server: $SERVER_IMAGE
serving:
  trafficRouter: replicas
artifactRoot: pvc://$CLAIM
podAnnotations:
  llmops.dev/e2e-operator-image: "$1"
EOF
}

# The examples' namespace and the artifact claim (the kind node's default StorageClass `standard`, a local-path
# provisioner; ReadWriteOnce is enough on one node: every pod that mounts it runs there).
cat >"$WORK/storage.yaml" <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: $CLAIM
  namespace: $NAMESPACE
spec:
  accessModes: [ReadWriteOnce]
  storageClassName: standard
  resources:
    requests:
      storage: 10Gi
EOF

# How the data files reach the cluster. The FineTune and the Evaluation name `./data/*.jsonl`, relative to the
# manifests (what local mode reads). A workload pod sees only what the operator mounts for it: a pvc://CLAIM/PATH
# URI mounts CLAIM at /mnt/pvc/CLAIM (operator/reconcile/storage.py); a relative path would be looked up in the
# pod's /workspace, where nothing is. So both halves are needed, and both are done here:
#   1. the files go into the artifact claim, under $INPUTS, copied by a short-lived pod that mounts it
#      (`kubectl cp`; the pod runs the trainer image, already in the node, as the workloads' user);
#   2. the five manifests are applied from copies in $WORK in which sed turned `uri: ./data/` into
#      `uri: pvc://$CLAIM/$INPUTS/`; examples/lifecycle/ stays as it is, for local mode.
cat >"$WORK/loader.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $LOADER
  namespace: $NAMESPACE
spec:
  restartPolicy: Never
  securityContext:
    runAsNonRoot: true
    runAsUser: 65532
    runAsGroup: 65532
  containers:
    - name: copy
      image: $TRAINER_IMAGE
      imagePullPolicy: Never
      command: [sleep, "3600"]
      volumeMounts:
        - name: artifacts
          mountPath: /mnt/pvc/$CLAIM
  volumes:
    - name: artifacts
      persistentVolumeClaim:
        claimName: $CLAIM
EOF

mkdir -p "$WORK/lifecycle"
for manifest in "$EXAMPLES"/*.yaml; do
  sed "s#\(uri:[[:space:]]*\)\./data/#\1pvc://$CLAIM/$INPUTS/#" "$manifest" >"$WORK/lifecycle/$(basename "$manifest")"
done
if grep -n '\./data/' "$WORK"/lifecycle/*.yaml; then
  die "examples/lifecycle still names ./data/ files after patching (the lines above): update the sed in $0"
fi
# Offline admission of the patched copies (the API server's checks), when `make setup` has run; in a dry run too.
if [ -x "$ROOT/.venv/bin/llmops" ]; then
  step "llmops validate (the patched manifests)"
  show "$ROOT/.venv/bin/llmops" validate -f "$WORK/lifecycle"
  "$ROOT/.venv/bin/llmops" validate -f "$WORK/lifecycle" | sed 's/^/    /' || die "the patched manifests are invalid"
fi

# --- 0. The chart, rendered for real (in a dry run too) ---------------------------------------------------------

step "helm template (checks the values against values.schema.json)"
write_values "dry-run"
run_template() {
  "$HELM" template "$RELEASE" "$CHART" --namespace "$OPERATOR_NAMESPACE" -f "$WORK/values.yaml" \
    >"$WORK/rendered.yaml"
}
show "$HELM" template "$RELEASE" "$CHART" --namespace "$OPERATOR_NAMESPACE" -f "$WORK/values.yaml"
run_template || die "helm template failed with the values in $WORK/values.yaml"
echo "    rendered $(grep -c '^kind:' "$WORK/rendered.yaml") objects into $WORK/rendered.yaml"

# --- 1. Cluster ---------------------------------------------------------------------------------------------------

step "kind cluster $CLUSTER"
if ! dry && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  echo "    reusing the existing cluster $CLUSTER"
  run kind export kubeconfig --name "$CLUSTER"
else
  run kind create cluster --name "$CLUSTER" --wait 180s
fi
CLUSTER_UP=1

# --- 2. Images ----------------------------------------------------------------------------------------------------

# The Dockerfiles COPY only pyproject.toml, README.md, operator/ and trainer/ from the repository root; building
# from a copy of just those keeps .venv (gigabytes) and caches out of the context (the repository has no
# .dockerignore).
step "docker build (context: pyproject.toml README.md operator trainer)"
CONTEXT="$WORK/context"
run rm -rf "$CONTEXT"
run mkdir -p "$CONTEXT"
run cp -R "$ROOT/pyproject.toml" "$ROOT/README.md" "$ROOT/operator" "$ROOT/trainer" "$CONTEXT/"
run find "$CONTEXT" -name __pycache__ -prune -exec rm -rf {} +
run docker build -f "$ROOT/images/operator.Dockerfile" -t "$OPERATOR_IMAGE" "$CONTEXT"
run docker build -f "$ROOT/images/trainer.Dockerfile" --build-arg VARIANT=cpu -t "$TRAINER_IMAGE" "$CONTEXT"
run docker build -f "$ROOT/images/server.Dockerfile" --build-arg VARIANT=cpu -t "$SERVER_IMAGE" "$CONTEXT"

step "kind load docker-image"
run kind load docker-image --name "$CLUSTER" "$OPERATOR_IMAGE" "$TRAINER_IMAGE" "$SERVER_IMAGE"

# --- 3. Operator --------------------------------------------------------------------------------------------------

step "operator (Helm release $RELEASE in $OPERATOR_NAMESPACE)"
if ! dry; then
  write_values "$(docker image inspect -f '{{.Id}}' "$OPERATOR_IMAGE")"
  run_template || die "helm template failed with the values in $WORK/values.yaml"
fi
# Helm installs crds/ only on the first install; applying them keeps a reused cluster's CRDs current.
kube apply --server-side --force-conflicts -f "$CHART/crds/"
run "$HELM" upgrade --install "$RELEASE" "$CHART" --kube-context "$KUBE_CONTEXT" \
  --namespace "$OPERATOR_NAMESPACE" --create-namespace -f "$WORK/values.yaml"
kube -n "$OPERATOR_NAMESPACE" rollout status "deployment/$OPERATOR_DEPLOYMENT" --timeout=300s

# --- 4. Storage and the examples' data files ---------------------------------------------------------------------

step "artifact claim $NAMESPACE/$CLAIM and the examples' data files"
kube apply -f "$WORK/storage.yaml"
kube_ns delete pod "$LOADER" --ignore-not-found --grace-period=1
kube apply -f "$WORK/loader.yaml"
kube_ns wait --for=condition=Ready "pod/$LOADER" --timeout=300s
kube_ns exec "$LOADER" -- mkdir -p "/mnt/pvc/$CLAIM/$INPUTS"
for file in "$EXAMPLES"/data/*; do
  kube_ns cp "$file" "$LOADER:/mnt/pvc/$CLAIM/$INPUTS/$(basename "$file")"
done
kube_ns exec "$LOADER" -- ls -l "/mnt/pvc/$CLAIM/$INPUTS"
kube_ns delete pod "$LOADER" --grace-period=1 --wait=false

# --- 5. The lifecycle ---------------------------------------------------------------------------------------------

step "kubectl apply -f examples/lifecycle/ (data URIs patched to pvc://$CLAIM/$INPUTS/)"
kube_ns apply -f "$WORK/lifecycle/"

step "waiting for each resource in order (CPU training in kind takes a while)"
wait_for dataset.llmops.dev/shakespeare Succeeded 3600
wait_for pretrainjob.llmops.dev/tiny-shakespeare Succeeded 3600
wait_for finetune.llmops.dev/tiny-shakespeare-lora Succeeded 3600
wait_for evaluation.llmops.dev/tiny-shakespeare-lora Succeeded 1800
wait_for finetune.llmops.dev/tiny-shakespeare-int8 Succeeded 1800
wait_for evaluation.llmops.dev/tiny-shakespeare-int8 Succeeded 1800
for evaluation in tiny-shakespeare-lora tiny-shakespeare-int8; do
  kube_ns get "evaluation.llmops.dev/$evaluation" -o jsonpath='{.status.verdict}{"\n"}'
  if ! dry; then
    verdict=$(peek get "evaluation.llmops.dev/$evaluation" -o jsonpath='{.status.verdict}')
    [ "$verdict" = Passed ] || die "Evaluation $evaluation's verdict is '${verdict:-none}', not Passed: the \
Deployment's gate stays closed (see its results in status)"
  fi
done
wait_for deployment.llmops.dev/tiny-shakespeare Ready 1800

# --- 6. A completion ----------------------------------------------------------------------------------------------

step "a completion from the served model (port-forward to service/$MODEL)"
echo "$(show "${KUBECTL:-kubectl}" --context "$KUBE_CONTEXT" -n "$NAMESPACE" port-forward "service/$MODEL" \
  "$LOCAL_PORT:$SERVER_PORT") &"
if ! dry; then
  "$KUBECTL" --context "$KUBE_CONTEXT" -n "$NAMESPACE" port-forward "service/$MODEL" "$LOCAL_PORT:$SERVER_PORT" \
    >"$WORK/port-forward.log" 2>&1 &
  PORT_FORWARD_PID=$!
  for _ in $(seq 60); do
    curl -fsS "http://127.0.0.1:$LOCAL_PORT/readyz" >/dev/null 2>&1 && break
    kill -0 "$PORT_FORWARD_PID" 2>/dev/null || die "kubectl port-forward exited: $(cat "$WORK/port-forward.log")"
    sleep 1
  done
fi
BODY="{\"model\": \"$MODEL\", \"prompt\": \"ROMEO:\", \"max_tokens\": 20}"
run curl -fsS -X POST "http://127.0.0.1:$LOCAL_PORT/v1/completions" -H 'Content-Type: application/json' \
  -d "$BODY"
dry || echo
step "done: kubectl --context $KUBE_CONTEXT get llmops -A; kind delete cluster --name $CLUSTER removes it all"
