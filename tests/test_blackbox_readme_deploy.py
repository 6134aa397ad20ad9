"""README's Docker and Compose paths read as an operator follows them, without a Docker daemon: the
environment a container gets is worked out the way Docker does (the image's ENV, then ``--env-file`` /
``env_file``, then ``-e`` / ``environment``, later winning), from a ``.env`` copied from ``.env.example``."""

from __future__ import annotations

import re
import shlex

import yaml

from bot.config import BotSettings
from tests.settings_names import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())


def dot_env() -> dict[str, str]:
    """``cp .env.example .env``, as README asks, read the way Docker reads an env file."""
    out = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key] = value
    return out


def image_env() -> dict[str, str]:
    instructions = re.sub(r"\\\n", " ", DOCKERFILE)
    final_stage = instructions.split("\nFROM ")[-1]
    env: dict[str, str] = {}
    for line in final_stage.splitlines():
        if line.startswith("ENV "):
            env |= dict(pair.split("=", 1) for pair in shlex.split(line[4:]))
    return env


def documented_docker_run() -> list[str]:
    """The ``docker run`` the Dockerfile's header tells operators to type (its continuation lines joined)."""
    header = "\n".join(
        line.removeprefix("#").strip() for line in DOCKERFILE.splitlines() if line.startswith("#")
    )
    command = re.search(r"docker run .*?(?<!\\)\n", re.sub(r"\\\n", " ", header)).group(0)  # type: ignore[union-attr]
    return shlex.split(command)


def healthcheck_port(env: dict[str, str]) -> str:
    """The port the image's HEALTHCHECK polls, evaluated as its Python one-liner does."""
    check = re.search(r"HEALTHCHECK .*?CMD (\[.*?\])\n", re.sub(r"\\\n", " ", DOCKERFILE)).group(1)  # type: ignore[union-attr]
    snippet = yaml.safe_load(check)[2]
    url = re.search(r"'(http://[^']*)' % (os\.environ\.get\([^)]*\))", snippet)
    assert url is not None, snippet
    port = eval(url.group(2), {"os": type("os", (), {"environ": env})})  # the expression, on this env
    return str(port)


def test_docker_run_as_documented_keeps_data_on_the_volume_and_serves_health() -> None:
    args = documented_docker_run()
    assert args[:2] == ["docker", "run"] and "--env-file" in args
    env = image_env() | dot_env()  # --env-file .env over the image's ENV
    volumes = [args[i + 1].split(":")[1] for i, a in enumerate(args) if a == "-v"]
    for i, a in enumerate(args):  # then -e, which Docker applies after --env-file
        if a in ("-e", "--env"):
            key, value = args[i + 1].split("=", 1)
            env[key] = value
    # The data directory must be the volume: ./data would land in the container's own layer and be lost
    # with the container.
    assert env["DATA_DIR"] in volumes, f"DATA_DIR={env['DATA_DIR']!r} is not the volume {volumes}"
    # The HEALTHCHECK polls HEALTH_PORT; an empty value turns /healthz off and the container unhealthy.
    settings = BotSettings.model_validate({k: v for k, v in env.items() if k.startswith("HEALTH_")})
    assert settings.health_port is not None, "HEALTH_PORT is empty: /healthz is off"
    assert str(settings.health_port) == healthcheck_port(env)


def test_every_compose_bot_service_keeps_data_on_its_volume_and_serves_health() -> None:
    bots = {n: s for n, s in COMPOSE["services"].items() if s.get("image", "").startswith("agentbot")}
    assert {"bot", "shard0", "shard1"} <= set(bots)
    for name, service in bots.items():
        assert service["env_file"] == ".env"
        env = dot_env() | {k: str(v) for k, v in service["environment"].items()}  # environment wins
        mounts = [v.split(":")[1] for v in service["volumes"]]
        assert env["DATA_DIR"] in mounts, name
        assert env["HEALTH_PORT"] == "8080" and env["HEALTH_HOST"] == "0.0.0.0", name
        assert env["CHROMA_HOST"] == "chroma", name


def test_compose_chroma_server_is_the_version_of_the_pinned_client() -> None:
    pinned = re.search(r"^chromadb==(\S+)", (ROOT / "requirements.lock").read_text(), re.M)
    assert pinned is not None
    assert COMPOSE["services"]["chroma"]["image"] == f"chromadb/chroma:{pinned.group(1)}"
