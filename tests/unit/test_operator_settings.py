"""Operator settings come from the LLMOPS_* variables the Helm chart sets."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from llmops.operator.runtime.main import FINALIZER, kopf_settings
from llmops.operator.settings import KubeRayMode, OperatorSettings


def test_defaults_serve_all_namespaces() -> None:
    settings = OperatorSettings.from_env({})
    assert settings.clusterwide and settings.leader_election


def test_chart_variables_are_read() -> None:
    settings = OperatorSettings.from_env({
        "LLMOPS_WATCH_NAMESPACES": "team-a, team-b",
        "LLMOPS_LOG_LEVEL": "debug",
        "LLMOPS_METRICS_PORT": "9191",
        "LLMOPS_LEADER_ELECTION": "false",
        "LLMOPS_POD_NAME": "llmops-0",
        "HOME": "/ignored",
    })
    assert settings.watch_namespaces == ("team-a", "team-b") and not settings.clusterwide
    assert settings.metrics_port == 9191 and settings.log_level == "debug"
    assert settings.leader_election is False and settings.pod_name == "llmops-0"


def test_kuberay_is_auto_unless_the_chart_says_otherwise() -> None:
    assert OperatorSettings.from_env({}).kuberay is KubeRayMode.AUTO
    assert OperatorSettings.from_env({"LLMOPS_KUBERAY": "off"}).kuberay is KubeRayMode.OFF
    with pytest.raises(ValidationError, match="kuberay"):
        OperatorSettings.from_env({"LLMOPS_KUBERAY": "maybe"})


def test_a_bad_variable_names_itself() -> None:
    with pytest.raises(ValidationError, match="metrics_port"):
        OperatorSettings.from_env({"LLMOPS_METRICS_PORT": "ninety"})


def test_kopf_settings_use_our_names_and_leave_peering_to_the_lease() -> None:
    settings = kopf_settings(OperatorSettings())
    assert settings.persistence.finalizer == FINALIZER == "llmops.dev/finalizer"
    assert settings.peering.standalone is True
    assert settings.watching.server_timeout == 300
