#!/usr/bin/env bash
# Offline checks of the Helm chart: `helm lint --strict`, `helm template`
# with several value sets, each manifest validated against the Kubernetes
# schemas (see scripts/helm-check.py). Installs what it needs into a venv
# from PyPI: helm-python-sdk (Helm's Go SDK as a shared library) and
# kubernetes-validate (the bundled schemas).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${HELM_CHECK_VENV:-target/helm-check-venv}
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check helm-python-sdk==0.2.2 kubernetes-validate==1.37.0 pyyaml
fi
exec "$VENV/bin/python" scripts/helm-check.py
