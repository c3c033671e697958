"""Static checks of the production deployment files under infra/deploy/.

No container engine or cluster runs here, so these read the files: every YAML parses; compose
runs three KRaft brokers in one quorum with replication 3 / min ISR 2, PostgreSQL 16 and
dolbom's roles pointed at them; k8s Deployments have probes and requests that fit the 2-core
reference box; topic partition counts (where a file names them) match the catalogue; and no
secret value is committed.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy.engine import make_url

from schemas.config import Settings
from schemas.topics import CATALOGUE

DEPLOY = Path(__file__).resolve().parents[2] / "infra" / "deploy"
K8S = DEPLOY / "k8s"
DOLBOM_ROLES = {"migrate", "topics", "api", "worker", "relay"}
PLACEHOLDER = re.compile(r"^(|\$\{[A-Z_]+(:?[?-][^}]*)?\}|REPLACE_ME|change-me|your-[\w-]+|"
                         r"\+82-your-[\w-]+)$")
SECRET_KEY = re.compile(r"PASSWORD|TOKEN|SECRET|_SID$|DATABASE_URL|DATA_KEY")


def _yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml")) + sorted(DEPLOY.rglob("*.yml"))


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text("utf-8")) if d is not None]


def _compose() -> dict[str, Any]:
    docs = _docs(DEPLOY / "compose.yaml")
    assert len(docs) == 1
    return docs[0]


def _k8s() -> list[dict[str, Any]]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in _docs(path)]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _kafka_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: svc for name, svc in compose["services"].items()
            if str(svc.get("image", "")).startswith("apache/kafka:")}


def _millicores(cpu: str | int | float) -> int:
    text = str(cpu)
    return int(text[:-1]) if text.endswith("m") else int(float(text) * 1000)


def _mebibytes(mem: str) -> int:
    units = {"Mi": 1, "Gi": 1024}
    return int(mem[:-2]) * units[mem[-2:]]


def _known_env_names() -> set[str]:
    names = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", None)
        names.add(str(choices[0]) if choices else f"DOLBOM_{name.upper()}")
    return names


# -- every file --------------------------------------------------------------------------------

def test_the_deploy_files_exist_and_every_yaml_parses() -> None:
    files = _yaml_files()
    assert DEPLOY / "compose.yaml" in files
    assert (DEPLOY / "Dockerfile").is_file() and (DEPLOY / ".env.example").is_file()
    assert {"api.yaml", "worker.yaml", "relay.yaml", "migrate-job.yaml", "topics-job.yaml",
            "configmap.yaml", "secret.template.yaml"} <= {p.name for p in K8S.glob("*.yaml")}
    for path in files:
        assert _docs(path), f"{path} is empty"


def test_the_image_is_python_311_slim_installs_the_project_and_runs_as_a_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text("utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "pip wheel" in dockerfile and "pip install" in dockerfile
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["dolbom"\]', dockerfile, re.M)


# -- compose -----------------------------------------------------------------------------------

def test_compose_runs_three_kraft_brokers_in_one_quorum() -> None:
    kafka = _kafka_services(_compose())
    assert len(kafka) == 3
    envs = {name: _env(svc) for name, svc in kafka.items()}
    node_ids = {name: env["KAFKA_NODE_ID"] for name, env in envs.items()}
    assert len(set(node_ids.values())) == 3, "node ids must be distinct"
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in envs.values()}
    assert len(voters) == 1, "every broker must list the same quorum voters"
    expected = {f"{node_ids[name]}@{name}:9093" for name in kafka}
    assert set(voters.pop().split(",")) == expected
    cluster_ids = {env["CLUSTER_ID"] for env in envs.values()}
    assert len(cluster_ids) == 1
    assert len(base64.urlsafe_b64decode(cluster_ids.pop() + "==")) == 16  # a base64 UUID
    for name, env in envs.items():
        assert set(env["KAFKA_PROCESS_ROLES"].split(",")) >= {"controller", "broker"}
        assert not any(k.startswith("KAFKA_ZOOKEEPER") for k in env), "KRaft, no ZooKeeper"
        assert "CONTROLLER" in env["KAFKA_CONTROLLER_LISTENER_NAMES"]
        assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{name}:9092"
        assert env["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "3"
        assert env.get("KAFKA_AUTO_CREATE_TOPICS_ENABLE") == "false"


def test_compose_points_every_dolbom_role_at_its_postgres_and_kafka() -> None:
    compose = _compose()
    services = compose["services"]
    kafka = set(_kafka_services(compose))
    postgres = [n for n, s in services.items() if str(s.get("image", "")) == "postgres:16"]
    assert len(postgres) == 1
    dolbom = {n: s for n, s in services.items()
              if (s.get("build") or {}).get("dockerfile") == "infra/deploy/Dockerfile"}
    assert set(dolbom) == DOLBOM_ROLES
    for name, svc in dolbom.items():
        env = _env(svc)
        url = make_url(re.sub(r"\$\{[^}]*\}", "PLACEHOLDER", env["DOLBOM_DATABASE_URL"]))
        assert url.drivername == "postgresql+psycopg" and url.host == postgres[0], name
        hosts = {h.rsplit(":", 1)[0] for h in env["DOLBOM_KAFKA_BOOTSTRAP"].split(",")}
        assert hosts == kafka, name
        assert svc.get("env_file") in (".env", [".env"]), f"{name}: secrets come from .env"
        assert set(env) <= _known_env_names(), f"{name}: unknown setting"
        # One data key for every role, or what one encrypts another cannot read.
        assert env.get("DOLBOM_ENV") == "production", f"{name}: must refuse to run keyless"
    assert re.search(r"^DOLBOM_DATA_KEY=$", (DEPLOY / ".env.example").read_text("utf-8"), re.M)
    assert dolbom["migrate"]["command"] == ["db", "upgrade"]
    assert dolbom["topics"]["command"] == ["topics", "create", "--replication-factor", "3"]
    assert dolbom["api"]["command"][0] == "api" and "8000:8000" in dolbom["api"]["ports"]
    assert "/healthz" in " ".join(dolbom["api"]["healthcheck"]["test"])
    assert dolbom["worker"]["deploy"]["replicas"] == 2
    assert dolbom["relay"]["deploy"]["replicas"] == 2
    for role in ("api", "worker", "relay"):
        after = dolbom[role]["depends_on"]
        assert after["migrate"]["condition"] == "service_completed_successfully"
        assert after["topics"]["condition"] == "service_completed_successfully"
    for role in ("migrate", "topics"):
        assert dolbom[role]["restart"] == "no", "one-shot"


# -- Kubernetes --------------------------------------------------------------------------------

def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


def test_every_deployment_has_probes_and_requests_that_fit_the_reference_box() -> None:
    deployments = [d for d in _k8s() if d["kind"] == "Deployment"]
    assert {d["metadata"]["name"] for d in deployments} == {
        "dolbom-api", "dolbom-worker", "dolbom-relay"}
    cpu = mem = 0
    for dep in deployments:
        replicas = dep["spec"].get("replicas", 1)
        assert dep["spec"]["selector"]["matchLabels"].items() <= \
            dep["spec"]["template"]["metadata"]["labels"].items()
        for container in _containers(dep):
            name = dep["metadata"]["name"]
            assert "readinessProbe" in container and "livenessProbe" in container, name
            requests = container["resources"]["requests"]
            assert "cpu" in requests and "memory" in requests, name
            assert "memory" in container["resources"]["limits"], name
            cpu += replicas * _millicores(requests["cpu"])
            mem += replicas * _mebibytes(requests["memory"])
    # The reference box has 2 cores: the steady state must leave room for the node itself.
    assert cpu <= 1500, f"{cpu}m requested"
    assert mem <= 3 * 1024
    api = next(d for d in deployments if d["metadata"]["name"] == "dolbom-api")
    (container,) = _containers(api)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    replicas = {d["metadata"]["name"]: d["spec"]["replicas"] for d in deployments}
    assert replicas["dolbom-worker"] == 2 and replicas["dolbom-relay"] == 2


def test_k8s_jobs_services_and_settings() -> None:
    docs = _k8s()
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    jobs = {j["metadata"]["name"]: _containers(j)[0]["args"] for j in by_kind["Job"]}
    assert jobs == {"dolbom-migrate": ["db", "upgrade"],
                    "dolbom-topics": ["topics", "create", "--replication-factor", "3"]}
    (service,) = by_kind["Service"]
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "dolbom-api"}
    (config,) = by_kind["ConfigMap"]
    assert "DOLBOM_KAFKA_BOOTSTRAP" in config["data"]
    assert not any(SECRET_KEY.search(k) for k in config["data"]), "secrets go in the Secret"
    assert config["data"]["DOLBOM_ENV"] == "production"
    (secret,) = by_kind["Secret"]
    assert "DOLBOM_DATABASE_URL" in secret["stringData"]
    assert "DOLBOM_DATA_KEY" in secret["stringData"]
    assert (set(config["data"]) | set(secret["stringData"])) <= _known_env_names()
    (purge,) = by_kind["CronJob"]
    assert purge["spec"]["concurrencyPolicy"] == "Forbid"
    purge_job = purge["spec"]["jobTemplate"]
    assert _containers(purge_job)[0]["args"] == ["privacy", "purge", "--older-than", "90d"]
    for doc in by_kind["Deployment"] + by_kind["Job"] + [purge_job]:
        for container in _containers(doc):
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"dolbom-config", "dolbom-secrets"}, doc["metadata"]["name"]
    kustomization = _docs(K8S / "kustomization.yaml")[0]
    assert "secret.template.yaml" not in kustomization["resources"]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file()


# -- topics ------------------------------------------------------------------------------------

def _partition_mentions(text: str) -> list[tuple[str, int]]:
    """(topic, partitions) wherever a file names a dolbom topic with a partition count."""
    found = []
    for m in re.finditer(r"(dolbom\.[a-z][a-z.]*[a-z])[^\n]{0,60}?partitions\D{0,5}(\d+)", text):
        found.append((m.group(1), int(m.group(2))))
    for m in re.finditer(r"partitions\D{0,5}(\d+)[^\n]{0,60}?(dolbom\.[a-z][a-z.]*[a-z])", text):
        found.append((m.group(2), int(m.group(1))))
    return found


def _yaml_partition_mentions(node: Any) -> list[tuple[str, int]]:
    found = []
    if isinstance(node, dict):
        name = node.get("name") or node.get("topic") or node.get("topicName")
        if isinstance(name, str) and "partitions" in node:
            found.append((name, int(node["partitions"])))
        for value in node.values():
            found += _yaml_partition_mentions(value)
    elif isinstance(node, list):
        for value in node:
            found += _yaml_partition_mentions(value)
    return found


def test_the_mention_finder_finds_mentions() -> None:
    assert _partition_mentions("dolbom.requests: partitions=6") == [("dolbom.requests", 6)]
    assert _yaml_partition_mentions({"topics": [{"name": "dolbom.carers", "partitions": 3}]}) \
        == [("dolbom.carers", 3)]


def test_partition_counts_in_deploy_files_match_the_catalogue() -> None:
    catalogue = {t.name: t.partitions for t in CATALOGUE}
    for path in [p for p in DEPLOY.rglob("*") if p.is_file()]:
        text = path.read_text("utf-8")
        mentions = _partition_mentions(text)
        if path.suffix in (".yaml", ".yml"):
            mentions += [m for doc in _docs(path) for m in _yaml_partition_mentions(doc)]
        for topic, partitions in mentions:
            assert topic in catalogue, f"{path}: {topic} is not in schemas/topics.py"
            assert partitions == catalogue[topic], f"{path}: {topic} has {partitions}"
        for topic in re.findall(r"\bdolbom\.(?:requests|sms\.[a-z]+|carers)\b", text):
            assert topic in catalogue, f"{path}: {topic} is not in schemas/topics.py"


# -- secrets -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(p for p in DEPLOY.rglob("*") if p.is_file()),
                         ids=lambda p: str(p.relative_to(DEPLOY)))
def test_no_secret_is_committed(path: Path) -> None:
    assert path.name != ".env", "the env file with secrets must not be in the repository"
    text = path.read_text("utf-8")
    assert not re.search(r"\b(AC|SK|MG)[0-9a-f]{32}\b", text, re.I), "a Twilio SID"
    assert not re.search(r"\b[0-9a-f]{32}\b", text, re.I), "a token-like hex string"
    assert not re.search(r"[A-Za-z0-9_-]{43}=", text), "a data key (Fernet)"
    for user, password in re.findall(r"://([^:/@\s\"]+):([^@\n\"]+)@", text):
        assert PLACEHOLDER.match(password), f"a password in a URL: {user}:…"
    pairs = re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*[:=]\s*\"?([^\"\n#]*?)\"?\s*(?:#.*)?$",
                       text, re.M)
    for key, value in pairs:
        if SECRET_KEY.search(key) and key != "DOLBOM_DATABASE_URL":
            assert PLACEHOLDER.match(value.strip()), f"{key} holds a value, not a placeholder"


def test_the_env_file_is_ignored() -> None:
    assert ".env" in (DEPLOY / ".gitignore").read_text("utf-8").split()
