"""The app tier's LLM gateway (LiteLLM's proxy): its pinned version, its config, its key payloads.

One definition for every place the gateway runs (ECS, Kubernetes, the pyinfra ``gateway``
deploy): :func:`litellm_config` turns ``llmkit:gateway`` and the backends that serve each model
into LiteLLM's ``config.yaml`` mapping, and :func:`key_request` turns a role into the body of
LiteLLM's ``POST /key/generate``.

What the config does, for reviewers:

- **Routing**: every alias (``general``, ``reasoning``, ``default``) is one LiteLLM model group
  with one deployment per backend (a model host or an internal load balancer). The router
  shuffles requests over the group, retries a failed call ``num_retries`` times with exponential
  backoff starting at ``retry_backoff_seconds`` on connection errors and 5xx, leaves a backend out
  for ``cooldown_seconds`` after ``allowed_fails`` failures in a minute, and then tries the
  alias's ``fallbacks`` in order.
- **Secrets**: the master key and the database URL are never in the file. It names the
  environment variables (``os.environ/LITELLM_MASTER_KEY``, ``os.environ/DATABASE_URL``) that
  the platform fills from its secret store.
- **Audit**: spend and request logs go to PostgreSQL and are deleted after
  ``log_retention_days``; prompts and completions are stored only with ``store_prompts: true``
  (and are kept out of every logging callback otherwise).
- **TLS to the model hosts**: ``ssl_verify`` is the CA that signed the hosts' certificates and
  ``ssl_certificate`` the gateway's own client certificate (mutual TLS on bare metal).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from llmkit.catalog import load_catalog
from llmkit.config import GATEWAY_ROUTE_GROUPS, Gateway, GatewayRole, duration_seconds
from llmkit.errors import ConfigError, LlmkitError

MASTER_KEY_ENV = "LITELLM_MASTER_KEY"
SALT_KEY_ENV = "LITELLM_SALT_KEY"
DATABASE_URL_ENV = "DATABASE_URL"
#: The metadata key that records a virtual key's llmkit role (and what ``llmkit keys`` filters on).
ROLE_METADATA = "llmkit_role"


class LiteLLM(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: str
    requirement: str
    image: str
    port: int = Field(ge=1, le=65535)
    prisma_cli_version: str
    prisma_engine_version: str = Field(pattern=r"^[0-9a-f]{40}$")
    source: str


@cache
def litellm_release() -> LiteLLM:
    """The pinned LiteLLM release from ``llmkit/data/gateway.yaml``."""
    text = resources.files("llmkit").joinpath("data/gateway.yaml").read_text()
    data = yaml.safe_load(text)
    try:
        return LiteLLM.model_validate(data["litellm"])
    except (KeyError, TypeError, ValueError) as exc:
        raise LlmkitError(f"llmkit/data/gateway.yaml: not a valid gateway pin: {exc}") from None


@dataclass(frozen=True)
class Backend:
    """One place that serves a model: ``api_base`` is its root URL (``https://host:11434``)."""

    name: str
    api_base: str


def litellm_model(model_name: str, runtime: str) -> str:
    """LiteLLM's ``provider/model`` for a catalog model served by ``runtime``."""
    model = load_catalog().models.get(model_name)
    if model is None:
        raise ConfigError(
            key="llmkit:gateway.aliases",
            value=model_name,
            accepted="a model of the catalog",
            message="unknown model",
        )
    if runtime == "ollama":
        return f"ollama_chat/{model.ollama_tag}"
    if runtime == "vllm":
        return f"hosted_vllm/{model.hf_repo}"
    raise ConfigError(
        key="llmkit:runtime", value=runtime, accepted="ollama, vllm", message="no gateway route for runtime"
    )


def _api_base(backend: Backend, runtime: str) -> str:
    base = backend.api_base.rstrip("/")
    return f"{base}/v1" if runtime == "vllm" else base


def model_list(
    gateway: Gateway, backends: Mapping[str, Sequence[Backend]], runtime: str
) -> list[dict[str, Any]]:
    """One LiteLLM deployment per (alias, backend of the alias's model)."""
    deployments: list[dict[str, Any]] = []
    for alias, spec in gateway.aliases.items():
        served_by = backends.get(spec.model) or ()
        if not served_by:
            raise ConfigError(
                key=f"llmkit:gateway.aliases.{alias}.model",
                value=spec.model,
                accepted="a model that at least one backend serves: " + ", ".join(sorted(backends)),
                message="no backend serves this model",
            )
        for backend in served_by:
            deployments.append(
                {
                    "model_name": alias,
                    "litellm_params": {
                        "model": litellm_model(spec.model, runtime),
                        "api_base": _api_base(backend, runtime),
                        "timeout": gateway.request_timeout_seconds,
                        "stream_timeout": gateway.request_timeout_seconds,
                    },
                    "model_info": {"id": f"{alias}--{backend.name}", "base_model": spec.model},
                }
            )
    return deployments


def litellm_config(
    gateway: Gateway,
    backends: Mapping[str, Sequence[Backend]],
    *,
    runtime: str = "ollama",
    ca_file: str | None = None,
    client_certificate: str | None = None,
) -> dict[str, Any]:
    """LiteLLM's ``config.yaml`` as a mapping (see the module docstring for what each part does).

    ``backends`` maps a model name (``deepseek-r1:32b``) to the backends that serve it;
    ``ca_file`` verifies the backends' certificates, ``client_certificate`` (certificate and key
    in one PEM file) is presented to them.
    """
    fallbacks = [{alias: list(spec.fallbacks)} for alias, spec in gateway.aliases.items() if spec.fallbacks]
    router: dict[str, Any] = {
        "routing_strategy": "simple-shuffle",
        "num_retries": gateway.num_retries,
        "retry_after": gateway.retry_backoff_seconds,
        "allowed_fails": gateway.allowed_fails,
        "cooldown_time": gateway.cooldown_seconds,
        "timeout": gateway.request_timeout_seconds,
    }
    if fallbacks:
        router["fallbacks"] = fallbacks
    settings: dict[str, Any] = {
        "drop_params": True,
        "request_timeout": gateway.request_timeout_seconds,
        "num_retries": gateway.num_retries,
        "callbacks": ["prometheus"],
        # Prompts and completions stay out of every logging callback unless stored on purpose.
        "turn_off_message_logging": not gateway.store_prompts,
    }
    if ca_file:
        settings["ssl_verify"] = ca_file
    if client_certificate:
        settings["ssl_certificate"] = client_certificate
    general = {
        "master_key": f"os.environ/{MASTER_KEY_ENV}",
        "database_url": f"os.environ/{DATABASE_URL_ENV}",
        "store_prompts_in_spend_logs": gateway.store_prompts,
        "maximum_spend_logs_retention_period": f"{gateway.log_retention_days}d",
        "maximum_spend_logs_retention_interval": "1d",
        # A database outage must not turn key checks off.
        "allow_requests_on_db_unavailable": False,
    }
    return {
        "model_list": model_list(gateway, backends, runtime),
        "router_settings": router,
        "litellm_settings": settings,
        "general_settings": general,
    }


def render_config(config: Mapping[str, Any]) -> str:
    """The config mapping as the YAML file LiteLLM reads (stable key order, no secrets in it)."""
    header = "# LiteLLM proxy config written by llmkit (llmkit/gateway.py); do not edit by hand.\n"
    return header + yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


def role_models(gateway: Gateway, role: GatewayRole) -> list[str]:
    """The aliases a role's keys may call (every alias for ``["*"]``)."""
    return list(gateway.aliases) if "*" in role.models else list(role.models)


def key_request(
    gateway: Gateway, role_name: str, *, alias: str | None = None, owner: str | None = None
) -> dict[str, Any]:
    """The body of ``POST /key/generate`` for a new key of ``role_name``.

    The key carries the role's aliases, routes, expiry (``duration``), budget and rpm/tpm limits;
    its metadata records the role (and when it is due for rotation) so that ``llmkit keys`` can
    list, rotate and revoke keys by role.
    """
    role = gateway.roles.get(role_name)
    if role is None:
        raise ConfigError(
            key="role", value=role_name, accepted=", ".join(gateway.roles), message="unknown gateway role"
        )
    body: dict[str, Any] = {
        "models": role_models(gateway, role),
        "allowed_routes": list(role.routes),
        "duration": role.key_ttl,
        "metadata": {ROLE_METADATA: role_name},
    }
    if role.rotate_after:
        body["metadata"]["rotate_after_seconds"] = duration_seconds(role.rotate_after)
    if role.max_budget_usd is not None:
        body["max_budget"] = role.max_budget_usd
        body["budget_duration"] = role.budget_period
    if role.rpm_limit is not None:
        body["rpm_limit"] = role.rpm_limit
    if role.tpm_limit is not None:
        body["tpm_limit"] = role.tpm_limit
    if alias:
        body["key_alias"] = alias
    if owner:
        body["metadata"]["owner"] = owner
    return body


#: LiteLLM's management API path prefixes (keys, users, teams, budgets, spend, models, config):
#: what the proxy / load balancer admits only from ``admin_cidrs``.
MANAGEMENT_PATH_PREFIXES = (
    "/key/",
    "/user/",
    "/team/",
    "/organization/",
    "/customer/",
    "/end_user/",
    "/budget/",
    "/spend/",
    "/global/",
    "/model/",
    "/config/",
    "/credentials",
    "/ui",
    "/sso/",
)

__all__ = [
    "DATABASE_URL_ENV",
    "GATEWAY_ROUTE_GROUPS",
    "MANAGEMENT_PATH_PREFIXES",
    "MASTER_KEY_ENV",
    "ROLE_METADATA",
    "SALT_KEY_ENV",
    "Backend",
    "LiteLLM",
    "key_request",
    "litellm_config",
    "litellm_model",
    "litellm_release",
    "model_list",
    "render_config",
    "role_models",
]
