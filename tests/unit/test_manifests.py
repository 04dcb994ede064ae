"""deploy/ at schema level, offline: the Kubernetes manifests against the Kubernetes JSON schemas
(kubernetes-validate ships them), the KEDA objects against the part of KEDA's CRDs they use,
docker-compose.yml against the Compose specification's schema (check-jsonschema ships it), and
the references between them: selectors, probes, secrets, the queue KEDA watches, the commands."""

from __future__ import annotations

import json
import re
import tomllib
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from shared import amqp
from shared.cli import SERVICE_MODULES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = DEPLOY / "k8s"
# The oldest Kubernetes still supported upstream when this was written; the strict schemas refuse
# unknown fields, so a misspelt key fails here rather than being dropped by the API server.
K8S_VERSION = "1.31"
KEDA_SCHEMA = Path(__file__).with_name("schemas") / "keda-v2.json"
ROLES = ("gateway", "orchestrator", "worker")
KUSTOMIZATION_FIELDS = {
    "apiVersion",
    "kind",
    "labels",
    "resources",
    "images",
    "namespace",
    "commonAnnotations",
}


@cache
def kustomization() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    return loaded


@cache
def manifests() -> tuple[dict[str, Any], ...]:
    found: list[dict[str, Any]] = []
    for name in kustomization()["resources"]:
        found += [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc is not None]
    return tuple(found)


def of_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {doc["metadata"]["name"]: doc for doc in manifests() if doc["kind"] == kind}


def deployment(role: str) -> dict[str, Any]:
    return of_kind("Deployment")[f"modelruns-{role}"]


def container(workload: dict[str, Any]) -> dict[str, Any]:
    (only,) = workload["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(workload: dict[str, Any]) -> dict[str, Any]:
    """The container's variables: the ConfigMaps it takes whole, then its own."""
    found: dict[str, Any] = {}
    configmaps = of_kind("ConfigMap")
    for source in container(workload).get("envFrom", []):
        found.update(configmaps[source["configMapRef"]["name"]]["data"])
    for var in container(workload).get("env", []):
        found[var["name"]] = var.get("value", var.get("valueFrom"))
    return found


def test_the_kustomization_lists_every_manifest() -> None:
    listed = set(kustomization()["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert set(kustomization()) <= KUSTOMIZATION_FIELDS, set(kustomization()) - KUSTOMIZATION_FIELDS
    # The image the overlay retags is the one every pod runs.
    (image,) = kustomization()["images"]
    workloads = [*of_kind("Deployment").values(), *of_kind("Job").values()]
    assert {container(w)["image"] for w in workloads} == {image["name"]}


@pytest.mark.parametrize("doc", manifests(), ids=lambda doc: f"{doc['kind']}/{doc['metadata']['name']}")
def test_each_manifest_matches_its_schema(doc: dict[str, Any]) -> None:
    if doc["apiVersion"].startswith("keda.sh/"):
        schema = json.loads(KEDA_SCHEMA.read_text())
        jsonschema.Draft202012Validator({**schema, "$ref": f"#/$defs/{doc['kind']}"}).validate(doc)
        return
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_misspelt_field_is_caught() -> None:
    """The validation above is not vacuous: the strict schemas refuse a field they do not know."""
    broken = json.loads(json.dumps(deployment("gateway")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)


@pytest.mark.parametrize("role", ROLES)
def test_each_role_is_probed_on_healthz_and_readyz_where_it_serves_them(role: str) -> None:
    workload = deployment(role)
    main = container(workload)
    assert main["args"][0] == role and role in SERVICE_MODULES
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    env = env_of(workload)
    served = int(env["MODELRUNS_HTTP_PORT"] if role == "gateway" else env["MODELRUNS_OPS_PORT"])
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        http = main[probe]["httpGet"]
        assert http["path"] == path
        assert ports[http["port"]] == served, (role, probe)
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert int(annotations["prometheus.io/port"]) == served


def test_selectors_find_their_pods() -> None:
    pods = {
        name: doc["spec"]["template"]["metadata"]["labels"] for name, doc in of_kind("Deployment").items()
    }
    for name, doc in of_kind("Deployment").items():
        assert doc["spec"]["selector"]["matchLabels"].items() <= pods[name].items()
    selectors = [doc["spec"]["selector"] for doc in of_kind("Service").values()]
    selectors += [doc["spec"]["selector"]["matchLabels"] for doc in of_kind("PodDisruptionBudget").values()]
    for selector in selectors:
        matched = [name for name, labels in pods.items() if selector.items() <= labels.items()]
        assert len(matched) == 1, (selector, matched)
    budgets = {
        doc["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for doc in of_kind("PodDisruptionBudget").values()
    }
    assert budgets == set(pods)


def test_every_secret_a_pod_or_keda_reads_exists() -> None:
    secrets = {name: set(doc["stringData"]) for name, doc in of_kind("Secret").items()}
    wanted: list[tuple[str, str]] = []
    for workload in [*of_kind("Deployment").values(), *of_kind("Job").values()]:
        for var in container(workload).get("env", []):
            ref = var.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                wanted.append((ref["name"], ref["key"]))
    for auth in of_kind("TriggerAuthentication").values():
        wanted += [(ref["name"], ref["key"]) for ref in auth["spec"]["secretTargetRef"]]
    assert wanted
    missing = [(name, key) for name, key in wanted if key not in secrets.get(name, set())]
    assert not missing


def test_keda_scales_the_workers_on_their_pools_queue() -> None:
    (scaled,) = of_kind("ScaledObject").values()
    assert scaled["spec"]["scaleTargetRef"]["name"] == "modelruns-worker"
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    assert trigger["authenticationRef"]["name"] in of_kind("TriggerAuthentication")
    args = container(deployment("worker"))["args"]
    pools = [args[i + 1] for i, arg in enumerate(args) if arg == "--pool"]
    assert trigger["metadata"]["queueName"] in {amqp.pool_queue(pool) for pool in pools}
    assert trigger["metadata"]["mode"] == "QueueLength"
    # One replica per worker's worth of slots.
    assert trigger["metadata"]["value"] == env_of(deployment("worker"))["MODELRUNS_WORKER_CONCURRENCY"]


def test_the_migration_job_runs_db_upgrade_as_the_owner() -> None:
    (job,) = of_kind("Job").values()
    assert container(job)["args"] == ["db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] in ("OnFailure", "Never")
    assert "MODELRUNS_DATABASE_OWNER_URL" in env_of(job)


# -- docker-compose --------------------------------------------------------------------------------


@cache
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return loaded


def test_compose_matches_the_compose_specification() -> None:
    text = resources.files("check_jsonschema.builtin_schemas").joinpath("vendor/compose-spec.json")
    schema = json.loads(text.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert not errors
    broken = {**compose(), "services": {**compose()["services"], "gateway": {"helthcheck": {}}}}
    assert list(validator.iter_errors(broken)), "the compose schema refuses nothing"


def test_compose_runs_the_whole_system() -> None:
    services = compose()["services"]
    assert set(services) == {"postgres", "rabbitmq", "migrate", *ROLES}
    for role in ROLES:
        service = services[role]
        assert service["command"][0] == role
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["rabbitmq"]["condition"] == "service_healthy"
        test = " ".join(service["healthcheck"]["test"])
        assert "healthz" in test and "readyz" in test
    assert services["orchestrator"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    migrate = services["migrate"]
    assert migrate["command"] == ["db", "upgrade"] and migrate["restart"] == "no"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for infra in ("postgres", "rabbitmq"):
        assert services[infra]["healthcheck"]["test"]


def test_compose_loads_the_rabbitmq_definitions() -> None:
    mounts = {}
    for volume in compose()["services"]["rabbitmq"]["volumes"]:
        source, target, *_ = volume.split(":")
        mounts[target] = source
    conf = (DEPLOY / "rabbitmq" / "rabbitmq.conf").read_text()
    (path,) = re.findall(r"^load_definitions\s*=\s*(\S+)$", conf, re.MULTILINE)
    assert Path(DEPLOY / mounts[path]).resolve() == (DEPLOY / "rabbitmq" / "definitions.json").resolve()
    assert mounts["/etc/rabbitmq/rabbitmq.conf"] == "./rabbitmq/rabbitmq.conf"


def test_one_image_whose_command_picks_the_role() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["modelruns"\]$', dockerfile, re.MULTILINE)
    (cmd,) = re.findall(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert json.loads(cmd)[0] in SERVICE_MODULES
    # Every package the distribution installs is copied into the build.
    copied = set(re.findall(r"^COPY (\w+) \./\1$", dockerfile, re.MULTILINE))
    pyproject = tomllib.loads((DEPLOY.parent / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    assert copied == {pattern.rstrip("*") for pattern in packages}
    build = compose()["x-image"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (DEPLOY / "Dockerfile").resolve()
