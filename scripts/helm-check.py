#!/usr/bin/env python3
"""Validates deploy/helm/cria offline: Helm's own lint and template engine
(Helm v4's Go SDK through the helm-python-sdk wheel, no helm binary), then
every rendered manifest against the Kubernetes OpenAPI schemas bundled in
kubernetes-validate (strict: unknown fields are errors). ServiceMonitor is a
CRD with no bundled schema; its required fields are checked by hand.

Run through scripts/helm-check.sh, which installs both into a venv."""
import sys
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent.parent / "deploy" / "helm" / "cria"
KUBE_VERSIONS = ["1.29.0", "1.33.0"]

# Value sets: the defaults, and the other branches of every template.
CASES = {
    "defaults": {},
    "keys-pvc-no-hpa": {
        "server": {"apiKeySecret": "cria-keys", "webui": False, "pooling": ""},
        "model": {"persistentVolumeClaim": "models"},
        "autoscaling": {"enabled": False},
        "podDisruptionBudget": {"enabled": False},
    },
    "big-model": {
        "model": {"sizeBytes": 4_368_439_584, "kvBytesPerToken": 131072},
        "server": {"parallel": 8, "ctxSize": 8192, "threads": 16},
        "serviceMonitor": {"enabled": False},
        "prometheusAdapterRules": {"enabled": False},
    },
}


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


def check_service_monitor(doc):
    spec = doc.get("spec") or {}
    if not spec.get("selector", {}).get("matchLabels"):
        fail("ServiceMonitor without spec.selector.matchLabels")
    eps = spec.get("endpoints") or []
    if not eps or any(not e.get("port") or e.get("path") != "/metrics" for e in eps):
        fail(f"ServiceMonitor endpoints: {eps}")


def main():
    report = helm.lint(str(CHART), strict=True)
    for m in report.get("messages", []):
        print(f"  lint severity={m.get('severity')}: {m.get('path')}: {m.get('error')}")
    if report.get("errors") or any(m.get("severity", 0) >= 2 for m in report.get("messages", [])):
        fail(f"helm lint --strict: {report}")
    print(f"helm lint --strict: ok ({report.get('total_charts_linted')} chart)")
    chart = helm.Chart.load(str(CHART))
    for name, values in CASES.items():
        rendered = chart.render(values, name="cria", namespace="llm", is_install=True)
        kinds = []
        for path, text in sorted(rendered.items()):
            if path.endswith("NOTES.txt"):
                continue
            for doc in yaml.safe_load_all(text):
                if not doc:
                    continue
                kinds.append(doc["kind"])
                if doc["kind"] == "ServiceMonitor":
                    check_service_monitor(doc)
                    continue
                for v in KUBE_VERSIONS:
                    try:
                        kubernetes_validate.validate(doc, v, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        fail(f"{name}: {path}: {doc['kind']} against Kubernetes {v}: {e.message} at {list(e.path)}")
            if path.endswith("deployment.yaml"):
                dep = yaml.safe_load(text)
                c = dep["spec"]["template"]["spec"]["containers"][0]
                mem = c["resources"]["requests"]["memory"]
                print(f"  {name}: memory request {mem}, args {' '.join(c['args'])}")
        print(f"{name}: rendered and valid: {', '.join(kinds)}")
    print("all charts valid")


main()
