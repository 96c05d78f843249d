"""The Kubernetes manifests (infra/k8s) as kustomize renders each overlay, parsed with PyYAML.

Each rule is a function that returns its violations; every test asserts that the real output has none
and that a deliberately broken copy of it has some, so no rule passes by finding nothing to look at.
Skipped only where kustomize (or, for the schema test, kubeconform and the generated schemas) is not
installed: `make infra-check` installs them.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

from shelfproof.cli.stack import SERVICES, ServiceSpec

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
OVERLAYS = ("cpu", "gpu")
TOOLS = ROOT / ".tools"
SCHEMAS = TOOLS / "k8s-schemas" / "v1.33.5"
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "RayService", "RayCluster", "Pod"}
# Being written in parallel (issue 12); deployed here already, its health service named by its brief.
PRICING = ServiceSpec("pricing", "shelfproof.pricing", "SHELFPROOF_PRICING_", 50054, "shelfproof.pricing.v1.PricingService")
DEPLOYED_SERVICES = [*SERVICES, *([] if any(s.name == "pricing" for s in SERVICES) else [PRICING])]

Docs = list[dict[str, Any]]


def _tool(name: str) -> str | None:
    local = TOOLS / "bin" / name
    return str(local) if local.exists() else shutil.which(name)


KUSTOMIZE = _tool("kustomize")
KUBECONFORM = _tool("kubeconform")
needs_kustomize = pytest.mark.skipif(KUSTOMIZE is None, reason="kustomize is not installed (make infra-check installs it)")


def kustomize_build(path: Path) -> str:
    assert KUSTOMIZE is not None
    return subprocess.run([KUSTOMIZE, "build", str(path)], check=True, capture_output=True, text=True).stdout


@pytest.fixture(scope="module")
def rendered() -> dict[str, Docs]:
    if KUSTOMIZE is None:
        pytest.skip("kustomize is not installed (make infra-check installs it)")
    return {o: [d for d in yaml.safe_load_all(kustomize_build(K8S / "overlays" / o)) if d] for o in OVERLAYS}


# --- walking the rendered documents --------------------------------------------------------------------


def pod_specs(docs: Docs) -> Iterator[tuple[str, dict[str, Any]]]:
    """(where, pod spec) of every workload, the RayService's head and worker groups included."""
    for doc in docs:
        kind, name = doc["kind"], doc["metadata"]["name"]
        spec = doc.get("spec", {})
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
            yield f"{kind}/{name}", spec["template"]["spec"]
        elif kind == "CronJob":
            yield f"{kind}/{name}", spec["jobTemplate"]["spec"]["template"]["spec"]
        elif kind in ("RayService", "RayCluster"):
            cluster = spec["rayClusterConfig"] if kind == "RayService" else spec
            yield f"{kind}/{name}/head", cluster["headGroupSpec"]["template"]["spec"]
            for group in cluster.get("workerGroupSpecs", []):
                yield f"{kind}/{name}/{group['groupName']}", group["template"]["spec"]
        elif kind == "Pod":
            yield f"{kind}/{name}", spec


def containers(docs: Docs, *, init: bool = True) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(where, container, its pod spec) for every container; init containers too unless ``init=False``."""
    for where, pod in pod_specs(docs):
        for c in pod.get("containers", []):
            yield f"{where}:{c['name']}", c, pod
        if init:
            for c in pod.get("initContainers", []):
                yield f"{where}:init:{c['name']}", c, pod


def long_running(docs: Docs) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Containers of workloads that stay up (not a Job's, not init containers)."""
    jobs = {f"{d['kind']}/{d['metadata']['name']}" for d in docs if d["kind"] in ("Job", "CronJob")}
    for where, c, pod in containers(docs, init=False):
        if where.split(":")[0] not in jobs:
            yield where, c, pod


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


def find(docs: Docs, kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def container_running(docs: Docs, module: str) -> tuple[str, dict[str, Any]]:
    for where, c, _ in long_running(docs):
        if c.get("command", [])[:3] == ["python", "-m", module]:
            return where, c
    raise LookupError(f"no container runs python -m {module}")


def broken(docs: Docs, mutate: Callable[[Docs], None]) -> Docs:
    copied = copy.deepcopy(docs)
    mutate(copied)
    return copied


def first_container(docs: Docs, name: str) -> dict[str, Any]:
    return next(c for w, c, _ in containers(docs) if w.endswith(f":{name}"))


# --- rules ---------------------------------------------------------------------------------------------


def hardening_violations(docs: Docs) -> list[str]:
    bad = []
    for where, c, pod in containers(docs):
        sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
        if not (sc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            bad.append(f"{where}: runAsNonRoot")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            bad.append(f"{where}: runAsUser 0")
        if sc.get("readOnlyRootFilesystem") is not True:
            bad.append(f"{where}: readOnlyRootFilesystem")
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation")
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if "ALL" not in sc.get("capabilities", {}).get("drop", []) or sc.get("capabilities", {}).get("add"):
            bad.append(f"{where}: capabilities")
        seccomp = sc.get("seccompProfile", psc.get("seccompProfile", {})).get("type")
        if seccomp != "RuntimeDefault":
            bad.append(f"{where}: seccomp {seccomp}")
    return bad


def resource_violations(docs: Docs) -> list[str]:
    bad = []
    for where, c, _ in containers(docs):
        resources = c.get("resources", {})
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                if resource not in resources.get(part, {}):
                    bad.append(f"{where}: {part}.{resource}")
    return bad


def probe_violations(docs: Docs) -> list[str]:
    """Every long-running container has a liveness probe; one that serves a port has a readiness probe."""
    bad = []
    for where, c, _ in long_running(docs):
        if "livenessProbe" not in c:
            bad.append(f"{where}: no livenessProbe")
        if c.get("ports") and "readinessProbe" not in c:
            bad.append(f"{where}: serves ports but has no readinessProbe")
    return bad


def service_probe_violations(docs: Docs) -> list[str]:
    """Each service of `shelfproof up` is deployed, listens beyond loopback, and is probed on its own health:
    the gRPC health service (grpc.health.v1) named in cli/stack.py, or its HTTP health path."""
    bad = []
    for spec in DEPLOYED_SERVICES:
        try:
            where, c = container_running(docs, spec.module)
        except LookupError as err:
            bad.append(str(err))
            continue
        env = env_of(c)
        port = int(env.get(f"{spec.env_prefix}PORT", spec.default_port))
        if env.get(f"{spec.env_prefix}HOST") != "0.0.0.0":
            bad.append(f"{where}: {spec.env_prefix}HOST must be 0.0.0.0 in a pod (probes and Services reach the pod IP)")
        if port not in [p["containerPort"] for p in c.get("ports", [])]:
            bad.append(f"{where}: port {port} not declared")
        for probe_name in ("readinessProbe", "livenessProbe"):
            probe = c.get(probe_name, {})
            if spec.kind == "grpc":
                grpc = probe.get("grpc", {})
                if grpc.get("service") != spec.health_service or grpc.get("port") != port:
                    bad.append(f"{where}: {probe_name} is not the gRPC health check of {spec.health_service} on {port}")
            elif probe.get("httpGet", {}).get("path") != spec.health_service:
                bad.append(f"{where}: {probe_name} is not GET {spec.health_service}")
    return bad


def image_violations(docs: Docs) -> list[str]:
    bad = []
    for where, c, _ in containers(docs):
        image = c.get("image", "")
        name, _, tag = image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "")
        if "@sha256:" in image:
            continue
        if not tag or tag == "latest":
            bad.append(f"{where}: image {image!r} has no pinned tag")
    for doc in docs:
        if doc["kind"] == "Cluster":
            image = doc["spec"].get("imageName", "")
            if not image or image.endswith(":latest") or ":" not in image.rsplit("/", 1)[-1]:
                bad.append(f"Cluster/{doc['metadata']['name']}: imageName {image!r}")
    return bad


def host_access_violations(docs: Docs) -> list[str]:
    bad = []
    for where, pod in pod_specs(docs):
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(field):
                bad.append(f"{where}: {field}")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                bad.append(f"{where}: hostPath volume {volume['name']}")
        for c in pod.get("containers", []) + pod.get("initContainers", []):
            for port in c.get("ports", []):
                if "hostPort" in port:
                    bad.append(f"{where}:{c['name']}: hostPort")
    return bad


def gpu_requests(docs: Docs) -> list[str]:
    return [
        where for where, c, _ in containers(docs)
        if "nvidia.com/gpu" in c.get("resources", {}).get("limits", {})
    ]


def serve_applications(docs: Docs) -> dict[str, dict[str, Any]]:
    services = [d for d in docs if d["kind"] == "RayService"]
    apps: dict[str, dict[str, Any]] = {}
    for service in services:
        for app in yaml.safe_load(service["spec"]["serveConfigV2"])["applications"]:
            apps[app["name"]] = app
    return apps


ENGINE_ARGS = ("model_path", "model_name", "dtype", "tensor_parallel_size", "max_model_len")


def engine_arg_violations(docs: Docs) -> list[str]:
    """The GPU engine's arguments: explicit, no "auto", and valid LLMConfig fields (unknown keys fail)."""
    from shelfproof.planner.cluster import llm_config_from_args

    app = serve_applications(docs).get("planner-llm")
    if app is None:
        return ["no planner-llm application in a RayService"]
    bad = []
    if app.get("import_path") != "shelfproof.planner.cluster:llm_app":
        bad.append(f"planner-llm import_path {app.get('import_path')!r}")
    args = app.get("args", {})
    bad += [f"engine argument {k} not explicit" for k in ENGINE_ARGS if k not in args]
    if args.get("dtype") == "auto":
        bad.append("dtype auto")
    if args.get("accelerator") != "gpu":
        bad.append("accelerator is not gpu")
    try:
        config = llm_config_from_args(args)
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        bad.append(f"args are not an LLMConfig: {err}")
    else:
        mounts = [m["mountPath"] for w, c, _ in containers(docs) if "RayService" in w for m in c.get("volumeMounts", [])]
        if config.model_path is None or not any(str(config.model_path).startswith(m + "/") for m in mounts):
            bad.append(f"model_path {config.model_path} is not on a mounted volume")
    return bad


def offline_model_violations(docs: Docs) -> list[str]:
    """Every container that can load weights (planner, Ray) has the hub switched off and its weights on a
    PersistentVolumeClaim."""
    bad = []
    for where, c, pod in containers(docs):
        runs_model = "RayService" in where or c.get("command", [])[:3] == ["python", "-m", "shelfproof.planner"]
        if not runs_model:
            continue
        env = env_of(c)
        if env.get("HF_HUB_OFFLINE") != "1":
            bad.append(f"{where}: HF_HUB_OFFLINE is not 1")
        claims = {v["name"] for v in pod.get("volumes", []) if "persistentVolumeClaim" in v}
        if not any(m["name"] in claims for m in c.get("volumeMounts", []) if m["mountPath"] == "/models"):
            bad.append(f"{where}: /models is not a PersistentVolumeClaim")
    return bad


PRIVATE_MARKERS = ("seed", "priv_key", "private", "priv_validator")


def genesis_violations(docs: Docs) -> list[str]:
    """The shared genesis holds public keys only, and the verify page trusts exactly its validator set."""
    from shelfproof.verify.trust import validators_hash_of_file

    genesis = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shelfproof-genesis"))
    bad = []
    for key, text in genesis["data"].items():
        data = json.loads(text)
        if data.get("accounts"):
            bad.append(f"{key}: accounts (with their keys) in a shared ConfigMap")

        def walk(node: Any, path: str) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    if any(marker in k.lower() for marker in PRIVATE_MARKERS):
                        bad.append(f"{key}: {path}/{k}")
                    walk(v, f"{path}/{k}")
            elif isinstance(node, list):
                for i, v in enumerate(node):
                    walk(v, f"{path}/{i}")

        walk(data, "")
    config = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].startswith("shelfproof-config"))
    cometbft = json.loads(genesis["data"]["genesis.json"])
    app = json.loads(genesis["data"]["app-genesis.json"])
    if cometbft["chain_id"] != app["chain_id"] or cometbft["chain_id"] != config["data"]["chain_id"]:
        bad.append("chain ids differ between genesis.json, app-genesis.json and shelfproof-config")
    if json.dumps(cometbft["app_state"], sort_keys=True) != json.dumps(app["app_state"], sort_keys=True):
        bad.append("app states differ between genesis.json and app-genesis.json")
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".json") as file:
        file.write(genesis["data"]["genesis.json"])
        file.flush()
        expected = validators_hash_of_file(Path(file.name)).hex()
    trusted = [h.strip() for h in config["data"]["validators_hash"].split(",")]
    if expected not in trusted:
        bad.append(f"validators_hash does not name the genesis validator set {expected}")
    return bad


def network_policy_violations(docs: Docs) -> list[str]:
    """A default deny for ingress and egress, and every workload's pods selected by a policy of their own."""
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    bad = []
    default = [
        p for p in policies
        if p["spec"].get("podSelector") == {} and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress") and not p["spec"].get("egress")
    ]
    if not default:
        bad.append("no default-deny NetworkPolicy")
    selectors = [p["spec"]["podSelector"].get("matchLabels", {}) for p in policies if p["spec"].get("podSelector")]
    for doc in docs:
        if doc["kind"] not in WORKLOADS:
            continue
        templates = []
        if doc["kind"] == "RayService":
            cluster = doc["spec"]["rayClusterConfig"]
            templates = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster.get("workerGroupSpecs", [])]
        elif doc["kind"] != "Pod":
            templates = [doc["spec"]["template"]]
        for template in templates:
            labels = template.get("metadata", {}).get("labels", {})
            if not any(sel and all(labels.get(k) == v for k, v in sel.items()) for sel in selectors):
                bad.append(f"{doc['kind']}/{doc['metadata']['name']}: no NetworkPolicy selects its pods")
    return bad


# --- tests ---------------------------------------------------------------------------------------------


def check(rule: Callable[[Docs], list[str]], rendered: dict[str, Docs], mutate: Callable[[Docs], None], overlay: str = "gpu") -> None:
    for name, docs in rendered.items():
        assert rule(docs) == [], name
    assert rule(broken(rendered[overlay], mutate)) != [], "the rule accepted a broken manifest"


@pytest.mark.parametrize("field, value", [
    ("readOnlyRootFilesystem", False), ("allowPrivilegeEscalation", True), ("runAsNonRoot", False), ("privileged", True),
])
def test_every_container_is_hardened(rendered, field, value):
    check(hardening_violations, rendered, lambda d: first_container(d, "ray-worker")["securityContext"].update({field: value}))


def test_pod_level_root_is_caught(rendered):
    def as_root(docs):
        pod = dict(pod_specs(docs))["StatefulSet/validator"]
        pod["securityContext"]["runAsUser"] = 0
    check(hardening_violations, rendered, as_root)


def test_every_container_has_requests_and_limits(rendered):
    check(resource_violations, rendered, lambda d: first_container(d, "init:node-home")["resources"].pop("limits"))


def test_every_long_running_container_has_probes(rendered):
    check(probe_violations, rendered, lambda d: first_container(d, "abci").pop("livenessProbe"))


def test_services_are_probed_on_their_own_health_service(rendered):
    def wrong_service(docs):
        first_container(docs, "registry")["readinessProbe"]["grpc"]["service"] = "shelfproof.ledger.v1.LedgerService"
    check(service_probe_violations, rendered, wrong_service)
    loopback = broken(rendered["cpu"], lambda d: next(
        e for e in first_container(d, "pricing")["env"] if e["name"] == "SHELFPROOF_PRICING_HOST").update(value="127.0.0.1"))
    assert any("HOST must be 0.0.0.0" in v for v in service_probe_violations(loopback))
    missing = broken(rendered["cpu"], lambda d: d.remove(find(d, "Deployment", "verify")))
    assert any("shelfproof.verify" in v for v in service_probe_violations(missing))


@pytest.mark.parametrize("image", ["registry.example.org/shelfproof/services:latest", "registry.example.org/shelfproof/services"])
def test_no_image_is_latest_or_untagged(rendered, image):
    check(image_violations, rendered, lambda d: first_container(d, "console").update(image=image))


@pytest.mark.parametrize("mutate", [
    lambda d: dict(pod_specs(d))["Deployment/registry"].update(hostNetwork=True),
    lambda d: dict(pod_specs(d))["StatefulSet/ledger"]["volumes"].append({"name": "root", "hostPath": {"path": "/"}}),
], ids=["hostNetwork", "hostPath"])
def test_no_host_network_or_host_path(rendered, mutate):
    check(host_access_violations, rendered, mutate)


def test_gpu_overlay_asks_for_gpus_and_cpu_overlay_does_not(rendered):
    assert gpu_requests(rendered["gpu"]), "the GPU overlay asks for no nvidia.com/gpu"
    assert gpu_requests(rendered["cpu"]) == []
    no_gpu = broken(rendered["gpu"], lambda d: first_container(d, "ray-worker")["resources"]["limits"].pop("nvidia.com/gpu"))
    assert gpu_requests(no_gpu) == []
    with_gpu = broken(rendered["cpu"], lambda d: first_container(d, "planner")["resources"]["limits"].update({"nvidia.com/gpu": "1"}))
    assert gpu_requests(with_gpu) != []


def test_gpu_worker_lands_on_gpu_nodes(rendered):
    worker = dict(pod_specs(rendered["gpu"]))["RayService/planner/gpu"]
    assert worker["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in worker["tolerations"])


def _serve_config(docs: Docs) -> dict[str, Any]:
    return yaml.safe_load(find(docs, "RayService", "planner")["spec"]["serveConfigV2"])


def _set_serve_config(docs: Docs, edit: Callable[[dict[str, Any]], None]) -> None:
    service = find(docs, "RayService", "planner")
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    edit(next(a for a in config["applications"] if a["name"] == "planner-llm")["args"])
    service["spec"]["serveConfigV2"] = yaml.safe_dump(config)


@pytest.mark.parametrize("edit", [
    lambda args: args.pop("tensor_parallel_size"),
    lambda args: args.update(dtype="auto"),
    lambda args: args.update(tensor_paralel_size=2),  # misspelt: LLMConfig would ignore it silently
    lambda args: args.update(max_model_len="long"),
    lambda args: args.update(model_path="/root/.cache/huggingface/model"),
], ids=["no-tp", "dtype-auto", "misspelt", "invalid", "model-off-volume"])
def test_gpu_engine_arguments_are_explicit_and_valid(rendered, edit):
    assert engine_arg_violations(rendered["gpu"]) == []
    assert engine_arg_violations(broken(rendered["gpu"], lambda d: _set_serve_config(d, edit))) != []


def test_serve_config_names_the_planner_applications(rendered):
    apps = {a["name"]: a for a in _serve_config(rendered["gpu"])["applications"]}
    assert apps["planner-drafter"]["import_path"] == "shelfproof.planner.cluster:drafter_app"
    from shelfproof.planner.app import DRAFTER_APP
    from shelfproof.planner.llm import APP_NAME

    # the names the planner's handles look up (serve.get_deployment_handle(..., app_name=...))
    assert set(apps) == {APP_NAME, DRAFTER_APP}


def test_cpu_engine_settings_are_explicit(rendered):
    env = env_of(container_running(rendered["cpu"], "shelfproof.planner")[1])
    assert env["SHELFPROOF_PLANNER_ACCELERATOR"] == "cpu"
    assert env["SHELFPROOF_PLANNER_DTYPE"] in ("float32", "bfloat16")
    assert env["SHELFPROOF_PLANNER_MODEL_DIR"].startswith("/models/")
    init = first_container(rendered["cpu"], "init:model")
    assert init["command"] == ["shelfproof", "planner", "prepare", "--verify"]


def test_model_weights_come_from_a_volume_never_a_hub(rendered):
    def online(docs):
        c = first_container(docs, "ray-head")
        c["env"] = [e for e in c["env"] if e["name"] != "HF_HUB_OFFLINE"]
    check(offline_model_violations, rendered, online)
    no_pvc = broken(rendered["cpu"], lambda d: next(
        v for v in dict(pod_specs(d))["Deployment/planner"]["volumes"] if v["name"] == "models").update(
        persistentVolumeClaim=None, emptyDir={}))
    for volume in dict(pod_specs(no_pvc))["Deployment/planner"]["volumes"]:
        if volume.get("persistentVolumeClaim") is None:
            volume.pop("persistentVolumeClaim", None)
    assert offline_model_violations(no_pvc) != []


def test_genesis_configmap_holds_public_keys_only(rendered):
    def leak(docs):
        genesis = next(d for d in docs if d["metadata"]["name"].startswith("shelfproof-genesis"))
        app = json.loads(genesis["data"]["app-genesis.json"])
        app["accounts"] = [{"agent_id": "4012345000009/admin-0", "seed": "00" * 32}]
        genesis["data"]["app-genesis.json"] = json.dumps(app)
    check(genesis_violations, rendered, leak)

    def other_validators(docs):
        config = next(d for d in docs if d["metadata"]["name"].startswith("shelfproof-config"))
        config["data"]["validators_hash"] = "00" * 32
    assert genesis_violations(broken(rendered["cpu"], other_validators)) != []


def test_network_policies_deny_by_default_and_cover_every_workload(rendered):
    check(network_policy_violations, rendered, lambda d: d.remove(find(d, "NetworkPolicy", "registry")))
    no_default = broken(rendered["cpu"], lambda d: d.remove(find(d, "NetworkPolicy", "default-deny")))
    assert "no default-deny NetworkPolicy" in network_policy_violations(no_default)


def test_validators_keep_their_signing_state_and_keys_off_the_chain_volume(rendered):
    validator = find(rendered["cpu"], "StatefulSet", "validator")
    claims = {t["metadata"]["name"] for t in validator["spec"]["volumeClaimTemplates"]}
    assert claims == {"chain", "app-state"}
    pod = validator["spec"]["template"]["spec"]
    node_keys = next(v for v in pod["volumes"] if v["name"] == "node-keys")
    assert node_keys["emptyDir"]["medium"] == "Memory"
    config = next(d for d in rendered["cpu"] if d["metadata"]["name"].startswith("validator-config"))["data"]["config.toml"]
    assert 'priv_validator_key_file = "/node-keys/priv_validator_key.json"' in config
    assert 'proxy_app = "tcp://127.0.0.1:26658"' in config  # the ABCI app beside it, on the pod's loopback
    abci = first_container(rendered["cpu"], "abci")
    assert abci["command"] == ["python", "-m", "shelfproof.ledger.engines.abci_server"]
    assert env_of(abci)["SHELFPROOF_ABCI_HOST"] == "127.0.0.1"


def test_only_the_verify_page_and_console_are_behind_the_ingress(rendered):
    ingress = find(rendered["cpu"], "Ingress", "shelfproof")
    backends = {p["backend"]["service"]["name"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]}
    assert backends == {"verify", "console"}
    assert ingress["spec"]["tls"]


# --- the schema converter and kubeconform -------------------------------------------------------------


def _converter():
    spec = importlib.util.spec_from_file_location("k8s_schemas", ROOT / "infra" / "tools" / "k8s_schemas.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_schema_file_names_follow_kubeconform():
    k = _converter()
    assert k.schema_file_name("Deployment", "apps", "v1") == "deployment-apps-v1.json"
    assert k.schema_file_name("Service", "", "v1") == "service-v1.json"
    assert k.schema_file_name("NetworkPolicy", "networking.k8s.io", "v1") == "networkpolicy-networking-v1.json"
    assert k.schema_file_name("RayService", "ray.io", "v1") == "rayservice-ray-v1.json"
    assert k.schema_file_name("Cluster", "postgresql.cnpg.io", "v1") == "cluster-postgresql-v1.json"


def test_converter_closes_objects_and_types_kubernetes_extensions():
    import jsonschema

    k = _converter()
    crd = {
        "kind": "CustomResourceDefinition",
        "spec": {
            "group": "example.io", "names": {"kind": "Thing"},
            "versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "properties": {
                        "port": {"x-kubernetes-int-or-string": True},
                        "note": {"type": "string", "nullable": True},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                    }},
                },
            }}}],
        },
    }
    schema = k.crd_schemas(crd)["thing-example-v1.json"]
    jsonschema.validate({"spec": {"port": 80, "note": None, "free": {"any": 1}}}, schema)
    jsonschema.validate({"spec": {"port": "http"}}, schema)
    for bad in ({"spec": {"prot": 80}}, {"spec": {"port": 1.5}}, {"extra": 1}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)
    swagger = {"definitions": {
        "io.k8s.apimachinery.pkg.api.resource.Quantity": {"type": "string"},
        "x.Pod": {"type": "object", "x-kubernetes-group-version-kind": [{"group": "", "kind": "Pod", "version": "v1"}],
                  "properties": {"cpu": {"$ref": "#/definitions/io.k8s.apimachinery.pkg.api.resource.Quantity"}}},
    }}
    pod = k.swagger_schemas(swagger)["pod-v1.json"]
    jsonschema.validate({"cpu": 1}, pod)
    jsonschema.validate({"cpu": "500m"}, pod)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"cpus": 1}, pod)


@pytest.mark.skipif(KUBECONFORM is None or not SCHEMAS.is_dir(), reason="kubeconform or its schemas are not installed (make infra-check)")
@needs_kustomize
@pytest.mark.parametrize("overlay", OVERLAYS, ids=[f"{o}-overlay" for o in OVERLAYS])  # "gpu" alone marks a GPU-tier test
def test_kubeconform_strict_accepts_the_overlay_and_rejects_a_misspelt_field(overlay):
    location = f"{SCHEMAS}/{{{{ .ResourceKind }}}}{{{{ .KindSuffix }}}}.json"

    def kubeconform(text: str) -> subprocess.CompletedProcess:
        return subprocess.run([KUBECONFORM, "-strict", "-summary", "-schema-location", location, "-"],
                              input=text, capture_output=True, text=True)

    text = kustomize_build(K8S / "overlays" / overlay)
    good = kubeconform(text)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Skipped: 0" in good.stdout  # every kind had a schema
    bad = kubeconform(text.replace("readOnlyRootFilesystem:", "readOnlyRootFileSystem:", 1))
    assert bad.returncode != 0 and "readOnlyRootFileSystem" in bad.stdout


def image_user_violations(dockerfile: str, docs: Docs) -> list[str]:
    """The image's final USER is the non-root uid the pods run as (runAsNonRoot needs a numeric uid)."""
    users = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    if not users:
        return ["the Dockerfile sets no USER"]
    uid = users[-1].split(":")[0]
    if not uid.isdigit() or uid == "0":
        return [f"USER {users[-1]} is not a numeric non-root uid"]
    uids = {str(pod.get("securityContext", {}).get("runAsUser")) for _, pod in pod_specs(docs)}
    return [] if uids == {uid} else [f"pods run as {sorted(uids)}, the image as {uid}"]


def test_image_runs_as_the_pods_user(rendered):
    dockerfile = (ROOT / "infra" / "docker" / "Dockerfile").read_text()
    for docs in rendered.values():
        assert image_user_violations(dockerfile, docs) == []
    assert image_user_violations(dockerfile.replace("USER 10001:10001", "USER root"), rendered["gpu"]) != []
    assert image_user_violations(dockerfile, broken(rendered["cpu"], lambda d: dict(pod_specs(d))["Deployment/verify"][
        "securityContext"].update(runAsUser=20000))) != []
