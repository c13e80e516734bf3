"""deploy/k8s/: every manifest valid against the Kubernetes API schemas (kubernetes-validate,
strict: no unknown fields), and the facts that tie them to the image and the service."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

import wallet_proxy.gunicorn_config
from wallet_proxy.cli import main
from wallet_proxy.config import Settings
from wallet_proxy.memory import MB, instance_peak_bytes
from wallet_proxy.version import __version__

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
OPERATIONS = ROOT / "docs" / "operations.md"
# The oldest Kubernetes these manifests are meant for, and the newest schemas known here.
KUBERNETES_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


def documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def resources() -> dict[tuple[str, str], dict]:
    """Every resource of deploy/k8s (the Secret template too), by (kind, name)."""
    found = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in documents(path.name):
            found[(doc["kind"], doc["metadata"]["name"])] = doc
    return found


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid(version):
    for (kind, name), doc in resources().items():
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{kind}/{name} invalid for Kubernetes {version}: {error.message}")


def test_kustomization_lists_every_manifest_but_the_secret_template():
    listed = set(documents("kustomization.yaml")[0]["resources"])
    shipped = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == shipped - {"secret.example.yaml"}


def pod_of(resources_by_key, kind: str, name: str) -> dict:
    return resources_by_key[(kind, name)]["spec"]["template"]["spec"]


def test_deployment_probes_stop_and_security():
    found = resources()
    deployment = found[("Deployment", "wallet-proxy")]
    pod = pod_of(found, "Deployment", "wallet-proxy")
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"] and container["resources"]["limits"]

    # SIGKILL only after the load balancers drained (preStop) and gunicorn finished.
    pause = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pause[0] == "sleep"
    graceful = wallet_proxy.gunicorn_config.graceful_timeout
    assert pod["terminationGracePeriodSeconds"] > int(pause[1]) + graceful
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    # Non-root as the image's user, read-only root, writable emptyDirs where it writes.
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    uid, gid = re.search(r"^USER (\d+):(\d+)$", dockerfile, re.MULTILINE).groups()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert (pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]) == (
        int(uid),
        int(gid),
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    env = {e["name"]: e["value"] for e in container["env"]}
    for path in ("/tmp", env["PROMETHEUS_MULTIPROC_DIR"], env["WALLET_PROXY_DATA_DIR"]):
        assert mounts[path] in empty_dirs, path


def test_service_hpa_and_pdb_select_the_deployment():
    found = resources()
    deployment = found[("Deployment", "wallet-proxy")]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert found[("Service", "wallet-proxy")]["spec"]["selector"].items() <= labels.items()
    pdb = found[("PodDisruptionBudget", "wallet-proxy")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    target = found[("HorizontalPodAutoscaler", "wallet-proxy")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "wallet-proxy")
    (port,) = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert found[("Service", "wallet-proxy")]["spec"]["ports"][0]["targetPort"] == port["name"]


def test_redis_is_one_persistent_replica_that_never_evicts():
    found = resources()
    redis = found[("StatefulSet", "wallet-proxy-redis")]
    assert redis["spec"]["replicas"] == 1
    conf = found[("ConfigMap", "wallet-proxy-redis")]["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "managed Redis" in (K8S / "redis.yaml").read_text()
    url = found[("ConfigMap", "wallet-proxy")]["data"]["WALLET_PROXY_REDIS_URL"]
    assert url.startswith("redis://wallet-proxy-redis:6379/")


def test_the_cache_has_a_redis_of_its_own_that_evicts():
    """Issue 19 item 1: large wallets fill the cache's Redis, never the outbox's."""
    found = resources()
    conf = found[("ConfigMap", "wallet-proxy-cache")]["data"]["redis.conf"].splitlines()
    assert "maxmemory-policy allkeys-lru" in conf
    assert 'save ""' in conf and "appendonly no" in conf
    assert found[("Deployment", "wallet-proxy-cache")]["spec"]["replicas"] == 1
    service = found[("Service", "wallet-proxy-cache")]
    data = found[("ConfigMap", "wallet-proxy")]["data"]
    assert data["WALLET_PROXY_CACHE_REDIS_URL"].startswith(
        f"redis://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/"
    )


def mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()
    return int(number) * (1024 if unit == "Gi" else 1)


def test_the_memory_formula_holds_under_the_pods_limit():
    """docs/operations.md's peak for the ConfigMap's settings, every worker at its peak at
    once, fits the container's memory limit."""
    found = resources()
    env = {
        **found[("ConfigMap", "wallet-proxy")]["data"],
        **found[("Secret", "wallet-proxy")]["stringData"],
    }
    (container,) = pod_of(found, "Deployment", "wallet-proxy")["containers"]
    limit = mebibytes(container["resources"]["limits"]["memory"]) * MB
    assert instance_peak_bytes(Settings.from_env(env)) <= limit


def test_configmap_and_secret_template_make_a_valid_configuration():
    """What the pods get (ConfigMap + the Secret as shipped) passes check-config."""
    found = resources()
    env = {
        **found[("ConfigMap", "wallet-proxy")]["data"],
        **found[("Secret", "wallet-proxy")]["stringData"],
    }
    settings = Settings.from_env(env)
    assert settings.redis_url and settings.core_configured
    # Issue 19 item 11: the support pages' snippet names it instead of the request's Host.
    assert settings.public_url is not None and settings.public_url.startswith("https://")


def test_the_deployment_runs_this_release():
    """CHANGELOG.md says the Deployment's image tag follows the package's version."""
    (container,) = pod_of(resources(), "Deployment", "wallet-proxy")["containers"]
    assert container["image"].rpartition(":")[2] == __version__


def docs_block(name: str, language: str) -> str:
    """A `k8s-test` block of docs/operations.md, as written."""
    text = OPERATIONS.read_text()
    match = re.search(rf"<!-- k8s-test: {name} -->\n```{language}\n(.*?)```", text, re.S)
    assert match, f"no k8s-test block {name!r} in docs/operations.md"
    return match.group(1)


@pytest.mark.slow
def test_the_documented_image_name_is_the_one_the_deployment_gets(tmp_path):
    """The docs' `images` lines, rendered by kubectl's kustomize (`kustomize edit set image`,
    which writes them, is not to be had here): every manifest still there and valid, the
    Deployment on the pushed name, the name the docs' push and set-image lines use."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: run `make test` (scripts/system-deps.sh)")
    (images,) = yaml.safe_load(docs_block("images", "yaml"))["images"]
    pushed = f"{images['newName']}:{images['newTag']}"
    commands = docs_block("set-image", "sh")
    lines = [shlex.split(line) for line in commands.splitlines()]
    assert ["podman", "tag", "wallet-proxy", pushed] in lines
    assert ["podman", "push", pushed] in lines
    assert re.findall(r"kustomize edit set image (\S+?)=(\S+?)\)?$", commands, re.M) == [
        (images["name"], pushed)
    ]

    shutil.copytree(K8S, tmp_path / "k8s")
    with (tmp_path / "k8s" / "kustomization.yaml").open("a") as kustomization:
        kustomization.write(docs_block("images", "yaml"))
    rendered = subprocess.run(
        [kubectl, "kustomize", str(tmp_path / "k8s")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    found = {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(rendered)}
    assert set(found) == set(resources()) - {("Secret", "wallet-proxy")}
    for doc in found.values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    (container,) = pod_of(found, "Deployment", "wallet-proxy")["containers"]
    assert container["image"] == pushed


def test_the_attributes_sync_runs_the_command_nightly_with_the_services_settings(tmp_path):
    """The CronJob of docs/braze.md: the Deployment's image, settings and security, one run
    at a time, suspended until set up, its export on a volume it may write (the journal),
    Redis reachable, and no Service or PDB selecting its pods."""
    found = resources()
    cron = found[("CronJob", "wallet-proxy-attributes-sync")]
    assert cron["spec"]["suspend"] is True and cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    (served,) = pod_of(found, "Deployment", "wallet-proxy")["containers"]
    assert container["image"] == served["image"]
    assert container["envFrom"] == served["envFrom"]
    assert container["securityContext"] == served["securityContext"]
    assert pod["securityContext"] == pod_of(found, "Deployment", "wallet-proxy")["securityContext"]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False

    program, *args = container["command"]
    assert program == "wallet-proxy" and args[:2] == ["attributes", "sync"]
    export = Path(args[2])
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    claims = {
        v["name"]: v["persistentVolumeClaim"]["claimName"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims[mounts[str(export.parent)]] == "wallet-proxy-segments"
    assert ("PersistentVolumeClaim", "wallet-proxy-segments") in found
    # The command line is the command's own: a dry run of it on a copy of an export.
    copy = tmp_path / export.name
    copy.write_text("external_id\next-1\n")
    dry = CliRunner().invoke(main, [*args[:2], str(copy), *args[3:], "--dry-run"], env={})
    assert dry.exit_code == 0, dry.output

    labels = cron["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
    for kind, name in (("Service", "wallet-proxy"), ("PodDisruptionBudget", "wallet-proxy")):
        spec = found[(kind, name)]["spec"]
        selector = spec.get("selector", {}).get("matchLabels", spec.get("selector"))
        assert not selector.items() <= labels.items(), kind
    redis_from = found[("NetworkPolicy", "wallet-proxy-redis")]["spec"]["ingress"][0]["from"]
    assert {"podSelector": {"matchLabels": labels}} in redis_from


def test_the_cron_line_in_the_docs_runs_what_the_cronjob_runs():
    braze = (ROOT / "docs" / "braze.md").read_text()
    match = re.search(r"<!-- cron-test -->\n```\n(.*?)\n```", braze, re.S)
    assert match, "no cron-test block in docs/braze.md"
    minute, hour, *rest = match.group(1).split(maxsplit=5)
    cron = resources()[("CronJob", "wallet-proxy-attributes-sync")]
    assert f"{minute} {hour} {' '.join(rest[:3])}" == cron["spec"]["schedule"]
    words = shlex.split(rest[3])
    (program,) = [i for i, word in enumerate(words) if word.endswith("/wallet-proxy")]
    assert words[program + 1 : program + 3] == ["attributes", "sync"]
