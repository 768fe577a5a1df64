"""`docker compose --profile monitoring up`: Prometheus scraping the gateway and the workers,
Grafana provisioned with the Jobwire dashboard (monitoring/). No Docker engine is needed: the
files are parsed, and every metric the dashboard queries is looked for at the /metrics of a
real gateway and a real worker."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from shared.settings import Settings
from tests.conftest import RunWorker, StartGateway
from tests.gateway.endpoints.test_metrics import scrape
from tests.support import free_port

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "monitoring"
COMPOSE: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
DASHBOARD: dict[str, Any] = json.loads(
    (MONITORING / "grafana" / "dashboards" / "jobwire.json").read_text()
)
PROMETHEUS: dict[str, Any] = yaml.safe_load(
    (MONITORING / "prometheus" / "prometheus.yml").read_text()
)
_METRIC = re.compile(r"\bjobwire_[a-z0-9_]+")


def _expressions() -> list[str]:
    return [target["expr"] for panel in DASHBOARD["panels"] for target in panel["targets"]]


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> the repository file or folder mounted there."""
    mounts = {}
    for volume in COMPOSE["services"][service]["volumes"]:
        source, target = volume.split(":")[:2]
        if source.startswith("./"):
            mounts[target] = ROOT / source
    return mounts


async def test_every_metric_the_dashboard_queries_is_served(
    settings: Settings, start_gateway: StartGateway, start_worker: RunWorker
) -> None:
    port = free_port()
    await start_worker(settings.replace(worker_metrics_port=port))
    gateway = await start_gateway()
    await scrape(gateway.url)  # requests are counted from the first one on
    served = {name for name, _ in await scrape(gateway.url)}
    served |= {name for name, _ in await scrape(f"http://127.0.0.1:{port}")}

    queried = {name for expr in _expressions() for name in _METRIC.findall(expr)}
    assert queried - served == set()
    # What the issue asks the dashboard to show, at least.
    for wanted in (
        "jobwire_gateway_open_streams",
        "jobwire_gateway_events_delivered_total",
        "jobwire_gateway_resumes_total",
        "jobwire_worker_jobs_ended_total",
        "jobwire_worker_job_duration_seconds_bucket",
        "jobwire_queue_depth",
    ):
        assert wanted in queried


def test_the_monitoring_profile_runs_prometheus_and_grafana_only_when_asked() -> None:
    services = COMPOSE["services"]
    assert services["prometheus"]["profiles"] == ["monitoring"]
    assert services["grafana"]["profiles"] == ["monitoring"]
    assert all("profiles" not in services[name] for name in ("redis", "gateway", "worker"))
    for name in ("prometheus", "grafana"):  # on loopback only
        assert all(port.startswith("127.0.0.1:") for port in services[name]["ports"])


def test_prometheus_scrapes_the_gateway_with_the_metrics_key_and_every_worker() -> None:
    prometheus_yml = _mounts("prometheus")["/etc/prometheus/prometheus.yml"]
    assert prometheus_yml.is_file()
    jobs = {job["job_name"]: job for job in PROMETHEUS["scrape_configs"]}
    gateway_env = COMPOSE["services"]["gateway"]["environment"]
    worker_env = COMPOSE["services"]["worker"]["environment"]

    gateway = jobs["jobwire-gateway"]
    assert gateway["static_configs"] == [{"targets": [f"gateway:{gateway_env['JOBWIRE_PORT']}"]}]
    secret = gateway["authorization"]["credentials_file"].removeprefix("/run/secrets/")
    assert secret in COMPOSE["services"]["prometheus"]["secrets"]
    assert COMPOSE["secrets"][secret] == {"environment": "JOBWIRE_METRICS_KEY"}
    assert gateway_env["JOBWIRE_METRICS_KEY"] == "${JOBWIRE_METRICS_KEY:-}"

    (workers,) = jobs["jobwire-worker"]["dns_sd_configs"]
    assert workers["names"] == ["worker"]
    assert workers["port"] == int(worker_env["JOBWIRE_WORKER_METRICS_PORT"])
    assert worker_env["JOBWIRE_WORKER_METRICS_HOST"] == "0.0.0.0"
    assert "ports" not in COMPOSE["services"]["worker"]


def test_grafana_is_provisioned_with_the_prometheus_datasource_and_the_dashboard() -> None:
    mounts = _mounts("grafana")
    provisioning = mounts["/etc/grafana/provisioning"]
    (datasource,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["url"] == "http://prometheus:9090"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "jobwire.yml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    assert (dashboards / "jobwire.json").is_file()
    uids = {
        target["datasource"]["uid"] for panel in DASHBOARD["panels"] for target in panel["targets"]
    }
    assert uids == {datasource["uid"]}
