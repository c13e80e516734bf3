"""deploy/Dockerfile built and run with Debian's podman, against the sandbox on the host,
with the commands docs/operations.md gives (its `container-test` blocks).

No registry but PyPI and Debian's is reachable, so the `debian:bookworm-slim` base is made
here with debootstrap (minbase: what the official slim image is) and kept in podman's
store for the next run. pip inside the build gets the host's pip settings and CA bundle as
build secrets, which never reach a layer (checked below).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import requests
import yaml

from tests.helpers import API_KEY, free_port, wait_until
from wallet_proxy.sandbox import DEMO_CONNECT_AUTH, DEMO_RETAILER_ID
from wallet_proxy.serving import APP, CONFIG

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
OPERATIONS = ROOT / "docs" / "operations.md"
BASE = "docker.io/library/debian:bookworm-slim"
BUILD_STAGE = "localhost/wallet-proxy:test-build"
VENV_PYTHON = "/opt/wallet-proxy/bin/python"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# First line of the pip.conf handed to every build: found in an image, a secret leaked.
SECRET_MARKER = "wallet-proxy-build-secret"


def docs_block(name: str) -> str:
    """A `container-test` block of docs/operations.md, as written."""
    text = OPERATIONS.read_text()
    match = re.search(rf"<!-- container-test: {name} -->\n```sh\n(.*?)```", text, re.S)
    assert match, f"no container-test block {name!r} in docs/operations.md"
    return match.group(1)


def commands(block: str) -> list[list[str]]:
    """A block's commands as argument lists: continued lines joined, comments left out."""
    lines = block.replace("\\\n", " ").splitlines()
    return [words for line in lines if (words := shlex.split(line, comments=True))]


def documented(verb: str) -> list[str]:
    """The podman block's `podman VERB ...`, less `podman`."""
    (command,) = [c for c in commands(docs_block("podman")) if c[:2] == ["podman", verb]]
    return command[1:]


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


# The image the documented build makes (`-t`), which every test here runs.
IMAGE = option(documented("build"), "-t")


class Podman:
    """podman as docs/operations.md sets it up (its podman-setup block), through bash."""

    def __init__(self, directory: Path):
        if shutil.which("podman") is None:
            pytest.fail("podman is not installed: run `make test` (scripts/system-deps.sh)")
        if os.geteuid() != 0:
            pytest.skip("runs as root, as CI does (podman's store, debootstrap)")
        self.script = f'{docs_block("podman-setup")}\npodman "$@"'
        self.env = {**os.environ, "TMPDIR": str(directory)}  # the setup's mktemp

    def command(self, *args: str) -> list[str]:
        return ["bash", "-euo", "pipefail", "-c", self.script, "podman", *args]

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, **kwargs):
        result = subprocess.run(
            self.command(*args),
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            **kwargs,
        )
        if check:
            assert result.returncode == 0, f"podman {args[0]}: {result.stderr[-3000:]}"
        return result

    def start(self, *args: str, **kwargs) -> subprocess.Popen:
        """podman in the background, as a command run in a terminal."""
        return subprocess.Popen(
            self.command(*args),
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            **kwargs,
        )


def debian_mirror() -> str:
    """The Debian mirror this machine's apt uses for bookworm (one-line or deb822 sources)."""
    sources = Path("/etc/apt")
    for path in [sources / "sources.list", *sorted(sources.glob("sources.list.d/*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for line in text.splitlines():
            words = re.sub(r"\[[^]]*\]", "", line).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == "bookworm":
                return words[1]
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            if "bookworm" in fields.get("Suites", "").split() and fields.get("URIs"):
                return fields["URIs"].split()[0]
    return DEFAULT_MIRROR


def ensure_base_image(podman: Podman, directory: Path) -> None:
    """`debian:bookworm-slim` from debootstrap, once per machine (podman's store keeps it)."""
    if podman("image", "exists", BASE, check=False).returncode == 0:
        return
    debootstrap = shutil.which("debootstrap") or "/usr/sbin/debootstrap"
    rootfs = directory / "rootfs"
    subprocess.run(
        [debootstrap, "--variant=minbase", "bookworm", str(rootfs), debian_mirror()],
        check=True,
        capture_output=True,
        timeout=600,
    )
    # As the official slim image: no package lists or downloaded packages.
    for leftover in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    podman("import", "-", BASE, stdin=tar.stdout, timeout=300)
    assert tar.wait() == 0
    shutil.rmtree(rootfs)


def pip_settings_for_build() -> str:
    """The host's pip settings (files and PIP_* environment, as `pip config list` merges them)
    as one pip.conf for the build. The CA bundle pip trusts is the documented build's own
    secret, so it is left out, and so are local paths (find-links folders, file: indexes,
    constraint files): they don't exist inside the build. Values are never printed: they
    may hold credentials.
    """
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    settings: dict[str, dict[str, str]] = {}
    entries = [line.split("=", 1) for line in listed.splitlines() if "=" in line]
    # Files first, then the environment, which pip lets win.
    entries.sort(key=lambda entry: entry[0].startswith(":env:"))
    for key, raw in entries:
        section, _, name = key.rpartition(".")
        section = "global" if section == ":env:" else section
        value = str(ast.literal_eval(raw))
        if name == "cert":
            continue
        kept = [
            token
            for token in value.split()
            if not token.startswith(("file:", "/", "~", ".")) and not Path(token).exists()
        ]
        if kept:
            settings.setdefault(section, {})[name] = " ".join(kept)
    lines = [f"# {SECRET_MARKER}"]
    for section, values in settings.items():
        lines += [f"[{section}]", *(f"{name} = {value}" for name, value in values.items())]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def podman(tmp_path_factory) -> Podman:
    return Podman(tmp_path_factory.mktemp("podman"))


@pytest.fixture(scope="module")
def image(podman, tmp_path_factory) -> dict:
    """The image built from this checkout; what `podman image inspect` says of it."""
    directory = tmp_path_factory.mktemp("image")
    started = time.monotonic()
    ensure_base_image(podman, directory)
    base_seconds = time.monotonic() - started
    secrets = directory / "secrets"
    secrets.mkdir(mode=0o700)
    (secrets / "pip.conf").write_text(pip_settings_for_build())
    # The documented build, plus the host's pip settings as the docs' private-index secret.
    *options, context = documented("build")
    options += ["--secret", f"id=pip.conf,src={secrets / 'pip.conf'}"]
    stage = [*options, "--target=build"]
    stage[stage.index("-t") + 1] = BUILD_STAGE
    started = time.monotonic()
    # The build stage first, under a tag of its own, so the next run finds it cached.
    for command, tag in ((stage, BUILD_STAGE), (options, IMAGE)):
        previous = podman("image", "inspect", "--format={{.Id}}", tag, check=False).stdout
        podman(*command, context, cwd=ROOT, timeout=600)
        current = podman("image", "inspect", "--format={{.Id}}", tag).stdout
        if previous and previous != current:
            podman("rmi", previous.strip(), check=False)  # this test's previous build
    print(f"\nimage: base {base_seconds:.1f} s, build {time.monotonic() - started:.1f} s")
    shutil.rmtree(secrets)
    return json.loads(podman("image", "inspect", IMAGE).stdout)[0]


def test_image_metadata(image):
    config = image["Config"]
    assert config["User"] == "10001:10001"
    assert config["StopSignal"] == "SIGTERM"
    # gunicorn as PID 1 with the packaged config: the same command as gunicorn_command().
    assert config["Cmd"] == [VENV_PYTHON, "-m", "gunicorn", "-c", CONFIG, APP]
    healthcheck = image["Healthcheck"]
    assert healthcheck["Test"][0] == "CMD"
    assert "/healthz" in " ".join(healthcheck["Test"])
    assert healthcheck["Timeout"] <= 5 * 10**9


def test_build_secrets_stay_out_of_the_image(podman, image):
    found = podman(
        "run", "--rm", "--network=none", "--user=0", IMAGE,
        "grep", "-rlsF", SECRET_MARKER, "/opt", "/etc", "/root", "/var", "/usr/local", "/tmp",
        check=False,
    )  # fmt: skip
    assert found.returncode == 1, found.stdout  # 1: no match anywhere
    listed = podman("run", "--rm", "--network=none", IMAGE, "ls", "/run/secrets", check=False)
    assert listed.returncode != 0  # no such directory


def test_missing_settings_stop_it_with_one_line(podman, image):
    result = podman("run", "--rm", "--network=none", IMAGE, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "configuration error: SESSIONM_CONNECT_URL" in output
    assert "Traceback" not in output


def service_settings(sandbox_url: str, port: int) -> dict[str, str]:
    return {
        "WALLET_PROXY_BIND": f"127.0.0.1:{port}",
        "SESSIONM_CONNECT_URL": sandbox_url,
        "SESSIONM_CONNECT_AUTH": DEMO_CONNECT_AUTH,
        "SESSIONM_RETAILER_ID": DEMO_RETAILER_ID,
        "WALLET_PROXY_API_KEYS": API_KEY,
        "WEB_CONCURRENCY": "2",
    }


def service_env(sandbox_url: str, port: int) -> list[str]:
    return [f"--env={name}={value}" for name, value in service_settings(sandbox_url, port).items()]


def answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def serves_demo_alice(url: str) -> None:
    response = requests.get(
        f"{url}/v1/wallets/demo-alice", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=5
    )
    assert response.status_code == 200
    assert response.json()["user_id"] == "demo-alice"
    assert response.json()["offer_count"] > 0


def test_the_docker_commands_are_the_podman_commands():
    """No docker engine runs here: its block is held to the podman block the tests run."""
    podman_commands, docker_commands = (
        commands(docs_block("podman")),
        commands(docs_block("docker")),
    )
    assert [c[:2] for c in podman_commands] == [["podman", "build"], ["podman", "run"]]
    assert [c[0] for c in docker_commands] == ["docker"] * len(podman_commands)
    assert [c[1:] for c in docker_commands] == [c[1:] for c in podman_commands]


def test_the_documented_run_serves_a_wallet_and_stops_on_sigterm(podman, image, sandbox, tmp_path):
    """docs/operations.md's `podman run` as written, from a folder holding its env file."""
    run = documented("run")
    port = free_port()
    settings = service_settings(sandbox.url, port)
    env_file = tmp_path / option(run, "--env-file")
    env_file.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))
    process = podman.start(*run, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: answers(f"{url}/healthz") or process.poll() is not None, timeout=60)
        assert process.poll() is None, "podman run ended"
        serves_demo_alice(url)
    finally:
        if process.poll() is None:
            # As `kill` of the command would: SIGTERM to `podman run` (bash's child), which
            # passes it on to gunicorn in the container.
            children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text()
            for child in children.split():
                os.kill(int(child), signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err[-3000:]
    assert "Handling signal: term" in out + err
    assert "Traceback" not in out + err


def test_container_serves_a_wallet_read_only_as_non_root(podman, image, sandbox):
    port = free_port()
    name = f"wallet-proxy-test-{uuid.uuid4().hex[:12]}"
    url = f"http://127.0.0.1:{port}"
    # As the Kubernetes Deployment runs it: read-only root, writable /tmp and state dirs.
    podman(
        "run", "--detach", f"--name={name}", "--network=host", "--read-only",
        "--tmpfs=/tmp", "--tmpfs=/var/run/wallet-proxy/metrics", "--tmpfs=/var/lib/wallet-proxy",
        *service_env(sandbox.url, port), IMAGE,
    )  # fmt: skip
    try:
        wait_until(lambda: answers(f"{url}/healthz"), timeout=60)
        serves_demo_alice(url)
        assert podman("healthcheck", "run", name, check=False).returncode == 0
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        stopped = time.monotonic()
        podman("stop", "--time=15", name)
        print(f"\ncontainer stop (SIGTERM, graceful): {time.monotonic() - stopped:.1f} s")
        state = json.loads(podman("inspect", name).stdout)[0]["State"]
        assert state["ExitCode"] == 0  # gunicorn stopped on SIGTERM, not killed
        logs = podman("logs", name)
        assert "Handling signal: term" in logs.stdout + logs.stderr
        assert "Traceback" not in logs.stdout + logs.stderr
    finally:
        podman("rm", "--force", name, check=False)


def test_wallet_proxy_serve_runs_from_the_installed_package(podman, image, sandbox):
    """No checkout in the image: the gunicorn config must come from the package."""
    port = free_port()
    name = f"wallet-proxy-test-{uuid.uuid4().hex[:12]}"
    podman(
        "run", "--detach", f"--name={name}", "--network=host", *service_env(sandbox.url, port),
        IMAGE, "wallet-proxy", "serve",
    )  # fmt: skip
    try:
        wait_until(lambda: answers(f"http://127.0.0.1:{port}/readyz"), timeout=60)
    finally:
        podman("rm", "--force", name, check=False)


def test_kubernetes_prestop_pause_runs_in_the_image(podman, image):
    deployment = (ROOT / "deploy" / "k8s" / "deployment.yaml").read_text()
    pause = yaml.safe_load(deployment)["spec"]["template"]["spec"]["containers"][0]
    program = pause["lifecycle"]["preStop"]["exec"]["command"][0]
    podman("run", "--rm", "--network=none", IMAGE, program, "0")
