"""deploy/kubernetes, rendered and validated offline: every overlay's objects
against the Kubernetes API schemas (kubernetes-validate, strict: an unknown or
misplaced field fails), and the promises between them that no schema sees (the
Service and the ServiceMonitor find the pods, the probes hit Tally's routes, every
setting named is one Tally has, secrets come from Secrets)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tally.config import Settings
from tests.deploy.kustomize import Object, render

ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = ROOT / "deploy" / "kubernetes"
OVERLAYS = sorted(p.name for p in (KUBERNETES / "overlays").iterdir() if p.is_dir())
# The oldest release we support (the native preStop sleep is on by default from
# 1.30) and the newest the schemas know.
VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CUSTOM_KINDS = {"ServiceMonitor"}  # a CRD: checked by hand below
SETTINGS = {f"TALLY_{name.upper()}" for name in Settings.model_fields} | {"TALLY_HTTP_SERVER"}


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> dict[str, Object]:
    objects = render(KUBERNETES / "overlays" / request.param)
    by_kind = {f"{o['kind']}/{o['metadata']['name']}": o for o in objects}
    assert len(by_kind) == len(objects), "two objects of one kind share a name"
    return by_kind


def one(rendered: dict[str, Object], kind: str) -> Object:
    found = [o for key, o in rendered.items() if key.startswith(f"{kind}/")]
    assert len(found) == 1, (kind, list(rendered))
    return found[0]


def pod_spec(obj: Object) -> dict[str, Any]:
    spec: dict[str, Any] = obj["spec"]["template"]["spec"]
    return spec


@pytest.mark.parametrize("version", VERSIONS)
def test_every_object_is_valid_for_kubernetes(rendered: dict[str, Object], version: str) -> None:
    for key, obj in rendered.items():
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{key} on Kubernetes {version}: {exc.message}") from None


def test_the_deployment_probes_tallys_routes_and_runs_locked_down(
    rendered: dict[str, Object],
) -> None:
    pod = pod_spec(one(rendered, "Deployment"))
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["args"] == ["serve"]
    assert {"cpu", "memory"} <= container["resources"]["requests"].keys()
    assert "memory" in container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert pod["automountServiceAccountToken"] is False
    # Longer than tally's own graceful shutdown plus the preStop pause.
    assert pod["terminationGracePeriodSeconds"] > 10 + 5


def test_secrets_come_from_secrets_and_every_setting_named_is_tallys(
    rendered: dict[str, Object],
) -> None:
    for kind in ("Deployment", "Job"):
        (container,) = pod_spec(one(rendered, kind))["containers"]
        env = {e["name"]: e for e in container.get("env", [])}
        assert env["TALLY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "tally-secrets"
        assert set(env) <= SETTINGS, set(env) - SETTINGS
    assert set(one(rendered, "ConfigMap")["data"]) <= SETTINGS


def test_the_service_pdb_hpa_and_monitor_find_the_pods(rendered: dict[str, Object]) -> None:
    deployment = one(rendered, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    service = one(rendered, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    pdb = one(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    hpa = one(rendered, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    assert deployment["spec"]["replicas"] == hpa["spec"]["minReplicas"]
    monitor = one(rendered, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    ports = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"


def test_migrations_are_a_one_shot_job(rendered: dict[str, Object]) -> None:
    job = one(rendered, "Job")
    pod = pod_spec(job)
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] <= 5
    assert "activeDeadlineSeconds" in job["spec"]


def test_production_keeps_no_secret_in_git_and_survives_a_node() -> None:
    objects = render(KUBERNETES / "overlays" / "production")
    assert not [o for o in objects if o["kind"] == "Secret"]
    hpa = next(o for o in objects if o["kind"] == "HorizontalPodAutoscaler")
    pdb = next(o for o in objects if o["kind"] == "PodDisruptionBudget")
    # A drain takes at most maxUnavailable pods; the rest keep serving.
    assert hpa["spec"]["minReplicas"] > pdb["spec"]["maxUnavailable"] + 1
    (container,) = pod_spec(next(o for o in objects if o["kind"] == "Deployment"))["containers"]
    assert not container["image"].endswith(":latest")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kubectl_kustomize_renders_the_same_objects(overlay: str) -> None:
    """Where the real kustomize is at hand, the in-process renderer must agree with it
    (it is not in Debian's packages, so CI cannot count on it)."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(KUBERNETES / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    theirs = [o for o in yaml.safe_load_all(done.stdout) if o]
    ours = render(KUBERNETES / "overlays" / overlay)

    def key(o: Object) -> str:
        return f"{o['kind']}/{o['metadata']['name']}"

    assert sorted(theirs, key=key) == sorted(ours, key=key)
