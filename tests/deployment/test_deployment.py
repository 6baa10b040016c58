"""The deployment files: Dockerfile, .dockerignore and docker-compose.yml.

Docker does not run here, so these tests parse the files and hold them to what the
deployment relies on: the image is installed by `make install` like a developer's
checkout, runs as a non-root user and the same commands as `make run`; Redis is
private, evicts only keys with a TTL and is healthy before anything starts; exactly one
beat runs; every service has a healthcheck; every variable set is a real setting. The
optional profiles (the nginx edge cache, Flower) start only when named, and are wired
to the services they serve; tests/integration/test_edge.py runs the edge's nginx config.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from predictions.settings import Settings
from tests.deployment.files import (
    ROOT,
    SECRET_PATTERNS,
    Dockerfile,
    Instruction,
    copy_sources,
    dockerignored,
    make_recipes,
    make_run_commands,
    make_variable,
    nginx_directives,
    read_dockerfile,
    render_template,
)

APP_SERVICES = ("api", "worker", "beat")
# Optional services, each started only when its profile is named: service -> profile.
PROFILE_SERVICES = {"edge": "edge", "flower": "flower"}
EDGE_TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
ROOT_USERS = ("root", "0")

# Variables the image sets for the interpreter rather than for the service.
INTERPRETER_ENV = {"PATH", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE"}


# --- reading the files (tests/deployment/files.py holds the parsers) --------------------


def as_argv(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(key): str(value) for key, value in env.items()}


def container_ports(service: dict[str, Any]) -> list[tuple[str | None, int]]:
    """(published, container port) for each entry of ``ports``, short or long syntax."""
    found: list[tuple[str | None, int]] = []
    for entry in service.get("ports") or []:
        if isinstance(entry, dict):
            published = entry.get("published")
            found.append((None if published is None else str(published), int(entry["target"])))
            continue
        fields = str(entry).split("/")[0].split(":")
        published = fields[-2] if len(fields) > 1 else None
        found.append((published, int(fields[-1])))
    return found


def healthcheck_text(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return test if isinstance(test, str) else " ".join(test)


def setting_names() -> set[str]:
    return {field.name.upper() for field in dataclasses.fields(Settings)}


# --- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def parsed_dockerfile() -> Dockerfile:
    return read_dockerfile(ROOT / "Dockerfile")


@pytest.fixture(scope="module")
def dockerfile(parsed_dockerfile: Dockerfile) -> list[Instruction]:
    return parsed_dockerfile.instructions


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.fixture(scope="module")
def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def installed_packages(pyproject: dict[str, Any]) -> list[str]:
    """The top-level packages that the install makes importable (only the core: api/
    and worker/ run from the working directory)."""
    include: list[str] = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return [pattern.rstrip("*") for pattern in include]


@pytest.fixture(scope="module")
def project_code(installed_packages: list[str]) -> list[str]:
    """What the image must hold to run every process, as paths."""
    return [*installed_packages, "api", "worker", "beat_schedule.py"]


@pytest.fixture(scope="module")
def image_env(parsed_dockerfile: Dockerfile) -> dict[str, str]:
    return parsed_dockerfile.env


def make_install_index(dockerfile: list[Instruction]) -> int:
    runs = [
        i
        for i, ins in enumerate(dockerfile)
        if ins.keyword == "RUN" and re.search(r"(^|[\s;&])make install($|[\s;&])", ins.value)
    ]
    assert len(runs) == 1, "the Dockerfile should run `make install` exactly once"
    return runs[0]


# --- the Makefile's install, which the image reuses -------------------------------------


def test_make_install_pip_installs_the_project_with_runtime_dependencies_only() -> None:
    installs = [shlex.split(line) for line in make_recipes("install") if "pip install" in line]
    assert installs, "`make install` runs no pip install"
    assert any("." in argv for argv in installs), "`make install` should install the project"
    for argv in installs:
        assert not any(arg.startswith(".[") for arg in argv), f"extras in the image: {argv}"
        if "-r" in argv:  # the dependencies: exactly the locked versions, hashes checked
            assert "--require-hashes" in argv and "--no-deps" in argv, argv
            assert argv[argv.index("-r") + 1] == "requirements/service.lock", argv
        else:
            assert "--no-deps" in argv, argv
    assert make_variable("SERVICE_LOCK") == "requirements/service.lock"
    assert make_variable("VENV") == ".venv"


# --- Dockerfile -----------------------------------------------------------------------


def test_base_image_is_python_3_11_slim(dockerfile: list[Instruction]) -> None:
    bases = [ins.value.split()[0] for ins in dockerfile if ins.keyword == "FROM"]
    assert len(bases) == 1
    assert re.fullmatch(r"python:3\.11-slim(-[a-z]+)?", bases[0]), bases[0]


def test_apt_installs_only_make_and_cleans_up(dockerfile: list[Instruction]) -> None:
    apt = [ins.value for ins in dockerfile if ins.keyword == "RUN" and "apt-get" in ins.value]
    assert len(apt) == 1
    run = apt[0]
    assert "apt-get update" in run, "update and install in one layer, or the index goes stale"
    assert "--no-install-recommends" in run
    installed = run.split("apt-get install")[1].split("&&")[0].split()
    assert [word for word in installed if not word.startswith("-")] == ["make"]
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_dependency_layer_needs_only_the_build_files(
    dockerfile: list[Instruction], installed_packages: list[str]
) -> None:
    install = make_install_index(dockerfile)
    before = [
        source
        for ins in dockerfile[:install]
        if ins.keyword in ("COPY", "ADD")
        for source in copy_sources(ins)
    ]
    # Code changes must not invalidate the layer that holds every dependency.
    assert sorted(before) == [
        "Makefile",
        "README.md",
        "pyproject.toml",
        "requirements/service.lock",
    ]
    # ...so the editable install gets stand-ins for the packages it must find.
    run = dockerfile[install].value
    for package in installed_packages:
        assert f"{package}/__init__.py" in run, f"no stand-in for {package} before the install"


def test_code_is_copied_after_the_install(
    dockerfile: list[Instruction], project_code: list[str]
) -> None:
    install = make_install_index(dockerfile)
    after = {
        source
        for ins in dockerfile[install + 1 :]
        if ins.keyword == "COPY"
        for source in copy_sources(ins)
    }
    missing = set(project_code) | {"gunicorn.conf.py"}
    assert missing <= after, f"not copied into the image: {sorted(missing - after)}"


def test_copy_sources_exist_and_reach_the_build_context(
    dockerfile: list[Instruction], dockerignore: list[str]
) -> None:
    sources = [s for ins in dockerfile if ins.keyword == "COPY" for s in copy_sources(ins)]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file; docker build fails"
        assert not dockerignored(source, dockerignore), f"COPY {source} is .dockerignored"


def test_image_runs_as_a_fixed_non_root_user(dockerfile: list[Instruction]) -> None:
    users = [i for i, ins in enumerate(dockerfile) if ins.keyword == "USER"]
    assert users, "no USER: the container would run as root"
    user = dockerfile[users[-1]].value.split(":")[0]
    assert user not in ROOT_USERS
    cmd = max(i for i, ins in enumerate(dockerfile) if ins.keyword == "CMD")
    assert users[-1] < cmd
    created = " ".join(ins.value for ins in dockerfile if ins.keyword == "RUN")
    assert re.search(rf"useradd\b.*--uid {user}\b", created) or re.search(
        rf"useradd\b.*\b{user}$", created
    ), f"USER {user} is not created with a fixed uid by useradd"


def test_image_environment(dockerfile: list[Instruction], image_env: dict[str, str]) -> None:
    workdir = [ins.value for ins in dockerfile if ins.keyword == "WORKDIR"]
    assert workdir == ["/app"]
    assert image_env["PATH"].startswith("/app/.venv/bin:")
    assert image_env["PYTHONUNBUFFERED"] == "1"
    assert image_env["API_BIND"] == "0.0.0.0:8000"
    unknown = set(image_env) - INTERPRETER_ENV - setting_names()
    assert not unknown, f"ENV sets variables that are not settings: {sorted(unknown)}"


def test_image_exposes_the_port_it_binds(
    dockerfile: list[Instruction], image_env: dict[str, str]
) -> None:
    exposed = [
        port.split("/")[0]
        for ins in dockerfile
        if ins.keyword == "EXPOSE"
        for port in ins.value.split()
    ]
    binds = (image_env["API_BIND"], image_env["WORKER_METRICS_BIND"])
    assert exposed == [bind.rpartition(":")[2] for bind in binds]


def test_default_command_is_the_api_as_make_run_runs_it(
    dockerfile: list[Instruction],
) -> None:
    cmds = [ins.value for ins in dockerfile if ins.keyword == "CMD"]
    assert len(cmds) == 1
    # Exec form: no shell in between, so gunicorn itself receives SIGTERM.
    assert json.loads(cmds[0]) == ["gunicorn", "api.wsgi:app"] == make_run_commands()["api"]


# --- .dockerignore --------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        ".git/HEAD",
        ".venv/bin/python",
        ".run/redis/dump.rdb",
        ".env",
        "tests/deployment/test_deployment.py",
        "docs/index.md",
        "predictions/__pycache__/store.cpython-311.pyc",
        ".pytest_cache/README.md",
        ".ruff_cache/CACHEDIR.TAG",
        ".mypy_cache/3.11/x.json",
        "prediction_cache.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_local_state_out(path: str, dockerignore: list[str]) -> None:
    assert dockerignored(path, dockerignore)


# --- docker-compose.yml: services and singletons --------------------------------------


def test_compose_services(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"redis", *APP_SERVICES, *PROFILE_SERVICES}
    # A plain `docker compose up` starts exactly these; the rest wait for their profile.
    always = {name for name, service in services.items() if not service.get("profiles")}
    assert always == {"redis", *APP_SERVICES}
    for name, profile in PROFILE_SERVICES.items():
        assert services[name]["profiles"] == [profile], name


def test_exactly_one_beat(services: dict[str, dict[str, Any]]) -> None:
    beats = [
        name
        for name, service in services.items()
        if {"celery", "beat"} <= set(as_argv(service.get("command", [])))
    ]
    assert beats == ["beat"]
    assert services["beat"]["deploy"]["replicas"] == 1
    assert services["beat"].get("scale", 1) == 1
    # A worker started with -B embeds a beat of its own: a second scheduler.
    for name, service in services.items():
        argv = as_argv(service.get("command", []))
        assert "-B" not in argv and "--beat" not in argv, f"{name} embeds a beat"


def test_workers_scale(services: dict[str, dict[str, Any]]) -> None:
    # `docker compose up --scale worker=3`: a fixed container name, hostname (the
    # worker's node name, pinged by its healthcheck) or host port would make replicas
    # collide. tests/integration/test_scaled_workers.py runs three workers.
    worker = services["worker"]
    assert not {"container_name", "hostname", "ports"} & set(worker)


def test_app_commands_are_the_make_run_commands(services: dict[str, dict[str, Any]]) -> None:
    commands = make_run_commands()
    assert as_argv(services["worker"]["command"])[:4] == ["celery", "-A", "worker", "worker"]
    assert as_argv(services["beat"]["command"])[:4] == ["celery", "-A", "worker", "beat"]
    for name in APP_SERVICES:
        assert as_argv(services[name]["command"]) == commands[name]


def test_app_services_share_the_x_app_block(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    shared = compose["x-app"]
    assert shared["build"] == "."
    for name in APP_SERVICES:
        for key in shared:
            assert services[name][key] == shared[key], f"{name}.{key} differs from x-app"


def test_every_service_restarts_unless_stopped(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        assert service.get("restart") == "unless-stopped", name


# --- healthchecks and start order -----------------------------------------------------


def test_every_service_has_a_healthcheck(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), name
        test = check["test"]
        assert test and test not in (["NONE"], "NONE"), f"{name}: empty healthcheck"
        assert isinstance(test, str) or test[0] in ("CMD", "CMD-SHELL"), name
        assert check.get("timeout"), f"{name}: a hung check should time out"


def test_healthchecks_check_the_right_thing(services: dict[str, dict[str, Any]]) -> None:
    assert "redis-cli ping" in healthcheck_text(services["redis"])
    api = healthcheck_text(services["api"])
    assert "urllib" in api and "/readyz" in api
    worker = healthcheck_text(services["worker"])
    assert "celery -A worker inspect ping" in worker
    assert "celery@$$HOSTNAME" in worker, "ping this worker only, by its node name"
    assert "--timeout" in worker
    assert "ensure_connection" in healthcheck_text(services["beat"])


def test_python_healthchecks_compile(services: dict[str, dict[str, Any]]) -> None:
    checked = 0
    for name, service in services.items():
        test = service["healthcheck"]["test"]
        if isinstance(test, list) and test[1:3] == ["python", "-c"]:
            compile(test[3], f"<{name} healthcheck>", "exec")
            checked += 1
    assert checked >= 2


def test_api_healthcheck_uses_the_bound_port(
    services: dict[str, dict[str, Any]], image_env: dict[str, str]
) -> None:
    bind = environment(services["api"]).get("API_BIND", image_env["API_BIND"])
    port = int(bind.rpartition(":")[2])
    assert f"127.0.0.1:{port}/readyz" in healthcheck_text(services["api"])
    assert ("8000", port) in container_ports(services["api"])


def test_app_services_start_after_redis_is_healthy(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        depends_on = services[name].get("depends_on")
        assert isinstance(depends_on, dict), f"{name}: use the long form with a condition"
        assert depends_on["redis"]["condition"] == "service_healthy", name


# --- Redis ----------------------------------------------------------------------------


def test_redis_is_not_published(services: dict[str, dict[str, Any]]) -> None:
    assert "ports" not in services["redis"]
    for name, service in services.items():
        assert service.get("network_mode") != "host", f"{name} shares the host's network"
        for published, target in container_ports(service):
            assert 6379 not in (target, int(published or 0)), f"{name} publishes Redis"


def test_redis_is_bounded_and_evicts_only_keys_with_a_ttl(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    assert redis["image"].startswith("redis:7")
    argv = as_argv(redis["command"])
    options = dict(zip(argv[1::2], argv[2::2], strict=False))
    assert argv[0] == "redis-server"
    assert options["--maxmemory-policy"].startswith("volatile-")
    assert options["--maxmemory"] not in ("0", "0b"), "unbounded memory never evicts"


# --- the optional profiles: the edge cache and Flower ----------------------------------


@pytest.fixture(scope="module")
def edge_template() -> str:
    return EDGE_TEMPLATE.read_text()


def test_edge_is_the_official_nginx_with_the_shipped_template(
    services: dict[str, dict[str, Any]],
) -> None:
    edge = services["edge"]
    assert re.fullmatch(r"nginx:1\.\d+(\.\d+)?-alpine", edge["image"]), edge["image"]
    assert ("8080", int(environment(edge)["EDGE_LISTEN"])) in container_ports(edge)
    source, target, mode = edge["volumes"][0].split(":")
    assert (ROOT / source).resolve() == EDGE_TEMPLATE.parent
    assert (target, mode) == ("/etc/nginx/templates", "ro")
    assert EDGE_TEMPLATE.name.endswith(".conf.template"), "the image renders *.template only"
    assert edge["depends_on"]["api"]["condition"] == "service_healthy"


def test_edge_variables_fill_the_template_and_nothing_else(
    services: dict[str, dict[str, Any]], edge_template: str, image_env: dict[str, str]
) -> None:
    env = environment(services["edge"])
    placeholders = set(re.findall(r"\$\{(\w+)\}", edge_template))
    assert placeholders == {name for name in env if name.startswith("EDGE_")}
    # The image's envsubst replaces every defined variable whose name matches this
    # filter: the template's own nginx variables ($host, $upstream_...) must not match.
    nginx_variables = set(re.findall(r"\$(\w+)", edge_template))
    substituted = re.compile(env["NGINX_ENVSUBST_FILTER"])
    assert all(substituted.search(name) for name in placeholders)
    assert not [name for name in nginx_variables if substituted.search(name)]
    api_port = image_env["API_BIND"].rpartition(":")[2]
    assert env["EDGE_API"] == f"api:{api_port}"


def test_edge_never_serves_a_stale_or_an_error_answer(
    services: dict[str, dict[str, Any]], edge_template: str, tmp_path: Path
) -> None:
    # What the integration test shows with a real nginx, held here where nginx is absent:
    # the template as the image renders it, parsed by nginx's grammar (crossplane).
    rendered = render_template(edge_template, environment(services["edge"]))
    directives = nginx_directives(rendered, tmp_path)
    names = [words[0] for words in directives]
    ignored = next(words[1:] for words in directives if words[0] == "proxy_ignore_headers")
    assert {"Cache-Control", "Expires"} <= set(ignored)
    assert "X-Accel-Expires" not in ignored, "the API's absolute expiry is the lifetime"
    # No stale answers on errors or while updating, and errors never cached by status.
    assert "proxy_cache_use_stale" not in names
    assert "proxy_cache_background_update" not in names
    assert "proxy_cache_valid" not in names
    assert "proxy_cache_revalidate" not in names
    assert ["proxy_cache_lock", "on"] in directives
    assert ["add_header", "X-Cache-Status", "$upstream_cache_status", "always"] in directives


def test_flower_watches_the_brokers_queues_on_loopback_only(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    flower = services["flower"]
    assert flower["image"].startswith("mher/flower:"), "the official image, pinned"
    env = environment(flower)
    app_settings = Settings.from_env(environment(compose["x-app"]))
    assert env["CELERY_BROKER_URL"] == app_settings.broker_url
    port = int(env["FLOWER_PORT"])
    assert container_ports(flower) == [("5555", port)]
    # Flower can shut workers down and has no login: never on the host's interfaces.
    assert flower["ports"] == [f"127.0.0.1:5555:{port}"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert f"127.0.0.1:{port}/healthcheck" in healthcheck_text(flower)


# --- users, settings and secrets ------------------------------------------------------


def test_no_service_runs_as_root(services: dict[str, dict[str, Any]]) -> None:
    for name, service in services.items():
        user = str(service.get("user", "")).split(":")[0]
        assert user not in ROOT_USERS, f"{name} overrides the user to root"
    for name in APP_SERVICES:
        # Built from the Dockerfile, so its non-root USER applies.
        assert services[name]["build"] == "." and "image" not in services[name], name


def test_compose_sets_only_real_settings(services: dict[str, dict[str, Any]]) -> None:
    # The optional services run other images, configured by their own variables (below).
    for name, service in services.items():
        if name in PROFILE_SERVICES:
            continue
        env = environment(service)
        # CELERY_QUIET is Celery's own command-line switch (`celery --quiet`), not ours.
        unknown = set(env) - setting_names() - {"CELERY_QUIET"}
        assert not unknown, f"{name} sets variables that are not settings: {sorted(unknown)}"
        if name in APP_SERVICES:
            settings = Settings.from_env(env)  # raises on a value the service rejects
            assert settings.redis_url.startswith("redis://redis:")
            assert settings.broker_url != settings.redis_url, "keep the broker's db apart"


def test_compose_substitutes_nothing_from_the_host() -> None:
    # Compose replaces $NAME from the shell running it; $$ passes a $ to the container.
    text = (ROOT / "docker-compose.yml").read_text()
    assert "$" not in text.replace("$$", "")


@pytest.mark.parametrize(
    "name",
    [
        "Dockerfile",
        "docker-compose.yml",
        ".dockerignore",
        str(EDGE_TEMPLATE.relative_to(ROOT)),
    ],
)
def test_no_secrets_in_deployment_files(name: str) -> None:
    text = (ROOT / name).read_text()
    for what, pattern in SECRET_PATTERNS.items():
        found = pattern.search(text)
        assert not found, f"{name} holds {what}: {found[0] if found else ''!r}"


@pytest.mark.parametrize(
    ("sample", "secret"),
    [
        ("REDIS_PASSWORD=hunter2", True),
        ("api_token: abc123", True),
        ("AWS_ACCESS_KEY_ID: AKIAIOSFODNN7EXAMPLE", True),
        ("REDIS_URL: redis://:hunter2@redis:6379/0", True),
        ("command: redis-server --requirepass hunter2", True),
        ("REDIS_URL: redis://redis:6379/0", False),
        ("secrets:\n  - broker_password", False),
        ("http://127.0.0.1:8000/readyz", False),
    ],
)
def test_secret_patterns_tell_secrets_from_plain_config(sample: str, secret: bool) -> None:
    assert any(p.search(sample) for p in SECRET_PATTERNS.values()) is secret


def test_compose_publishes_the_api_on_the_hosts_loopback_only(
    services: dict[str, dict[str, Any]],
) -> None:
    entries = [str(entry) for entry in services["api"].get("ports") or []]
    assert entries and all(entry.startswith("127.0.0.1:") for entry in entries)


# --- issue 13: scrapable worker metrics, graceful stops, the lock ----------------------


def test_worker_metrics_listen_beyond_loopback_in_the_image(image_env: dict[str, str]) -> None:
    assert image_env["WORKER_METRICS_BIND"].startswith("0.0.0.0:")


def test_containers_may_stop_more_slowly_than_gunicorn_drains(
    services: dict[str, dict[str, Any]],
) -> None:
    import runpy

    graceful = runpy.run_path(str(ROOT / "gunicorn.conf.py"))["graceful_timeout"]
    for name in APP_SERVICES:
        grace = services[name].get("stop_grace_period", "10s")
        assert grace.endswith("s") and float(grace[:-1]) > graceful + 5, name


def _locked(path: Path) -> dict[str, list[str]]:
    """name -> its pinned versions (a universal lock may pin one per Python version)."""
    pins: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "==" in line and not line.startswith((" ", "#")):
            name, _, version = line.split(";")[0].strip(" \\").partition("==")
            pins.setdefault(canonicalize_name(name.split("[")[0]), []).append(version)
    return pins


@pytest.mark.parametrize(
    ("lock", "extras"),
    [("service.lock", ()), ("dev.lock", ("dev", "bench", "embedded", "live", "examples"))],
)
def test_each_lock_pins_every_dependency_within_pyproject_ranges(
    lock: str, extras: tuple[str, ...]
) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in project["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in project["optional-dependencies"][extra]]
    pins = _locked(ROOT / "requirements" / lock)
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name == "prediction-cache":
            continue
        assert name in pins, f"{lock} has no pin for {name}"
        for version in pins[name]:
            assert requirement.specifier.contains(version, prereleases=True), (name, version)
    # Every pin carries its hashes (pip --require-hashes refuses the file otherwise).
    blocks = (ROOT / "requirements" / lock).read_text().split("\n")
    for number, line in enumerate(blocks):
        if "==" in line and not line.startswith((" ", "#")):
            assert blocks[number + 1].strip().startswith("--hash=sha256:"), line


def test_gunicorns_master_imports_neither_redis_nor_prometheus_client() -> None:
    # The master reads gunicorn.conf.py before its gevent workers patch the standard
    # library (redis-py imports ssl), and before prometheus_client may be imported
    # (predictions.infra.multiprocess): a fresh interpreter shows what it pulls in.
    code = (
        "import runpy, sys; runpy.run_path('gunicorn.conf.py'); "
        "print(sorted(m for m in ('ssl', 'redis', 'prometheus_client') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "", "PROMETHEUS_MULTIPROC_DIR": ""},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
