"""The example Kubernetes manifest parses, hangs together, and sets only settings Journey knows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from journey.config import load_settings

MANIFEST = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "journey.yaml"


def documents() -> dict[str, dict[str, Any]]:
    """The manifest's objects by kind."""
    with MANIFEST.open() as file:
        return {doc["kind"]: doc for doc in yaml.safe_load_all(file) if doc}


def container() -> dict[str, Any]:
    """The Journey container of the Deployment."""
    (only,) = documents()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_it_holds_a_deployment_and_a_headless_service() -> None:
    objects = documents()
    assert set(objects) == {"Deployment", "Service"}
    assert objects["Service"]["spec"]["clusterIP"] == "None"
    assert objects["Deployment"]["spec"]["replicas"] >= 2


def test_the_selectors_match_the_pods() -> None:
    objects = documents()
    deployment = objects["Deployment"]["spec"]
    labels = deployment["template"]["metadata"]["labels"]
    for selector in (deployment["selector"]["matchLabels"], objects["Service"]["spec"]["selector"]):
        assert selector.items() <= labels.items()


def test_the_probes_and_the_service_reach_the_port_journey_listens_on() -> None:
    spec = container()
    env = {e["name"]: e.get("value") for e in spec["env"]}
    port = int(env["JOURNEY_LISTEN"].rsplit(":", 1)[1])
    (named,) = spec["ports"]
    assert named["containerPort"] == port
    assert spec["readinessProbe"]["grpc"]["port"] == port
    assert spec["livenessProbe"]["grpc"]["port"] == port
    (service_port,) = documents()["Service"]["spec"]["ports"]
    assert service_port["targetPort"] == named["name"]


def test_every_variable_is_a_valid_setting_and_the_grace_fits_the_termination_period() -> None:
    spec = container()
    # The Secret's value is not in the manifest; any PostgreSQL URL stands in for it.
    environ = {
        e["name"]: e.get("value", "postgresql+asyncpg://journey@db/journey") for e in spec["env"]
    }
    settings = load_settings(environ=environ)  # ConfigError names any unknown or bad variable
    assert settings.database_url.startswith("postgresql")
    period = documents()["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings.shutdown_grace.total_seconds() < period
