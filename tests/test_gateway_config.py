"""llmkit.gateway: LiteLLM's config and key requests from llmkit:gateway (pure, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llmkit import gateway as g
from llmkit.config import Gateway, load_stack
from llmkit.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = {
    "deepseek-r1:32b": [g.Backend("gpu1", "https://10.0.0.11:11434/")],
    "deepseek-r1:70b": [
        g.Backend("gpu2", "https://10.0.0.12:11434"),
        g.Backend("gpu3", "https://10.0.0.13:11434"),
    ],
}


def prod_gateway() -> Gateway:
    gateway = load_stack("prod", ROOT).gateway
    assert gateway is not None
    return gateway


def test_each_alias_is_a_group_with_one_deployment_per_backend() -> None:
    config = g.litellm_config(prod_gateway(), BACKENDS)
    groups: dict[str, list[str]] = {}
    for deployment in config["model_list"]:
        groups.setdefault(deployment["model_name"], []).append(deployment["litellm_params"]["api_base"])
    assert groups == {
        "general": ["https://10.0.0.11:11434"],
        "reasoning": ["https://10.0.0.12:11434", "https://10.0.0.13:11434"],
        "default": ["https://10.0.0.12:11434", "https://10.0.0.13:11434"],
    }
    models = {d["litellm_params"]["model"] for d in config["model_list"]}
    assert models == {"ollama_chat/deepseek-r1:32b", "ollama_chat/deepseek-r1:70b"}
    ids = [d["model_info"]["id"] for d in config["model_list"]]
    assert len(ids) == len(set(ids))


def test_router_retries_cools_down_and_falls_back() -> None:
    router = g.litellm_config(prod_gateway(), BACKENDS)["router_settings"]
    assert router["num_retries"] == 3 and router["retry_after"] == 1.0
    assert router["allowed_fails"] == 3 and router["cooldown_time"] == 30
    assert router["fallbacks"] == [{"reasoning": ["general"]}, {"default": ["general"]}]


def test_no_secret_in_the_file_and_prompts_are_not_stored_by_default() -> None:
    config = g.litellm_config(
        prod_gateway(), BACKENDS, ca_file="/tls/ca.crt", client_certificate="/tls/client.pem"
    )
    general = config["general_settings"]
    assert general["master_key"] == "os.environ/LITELLM_MASTER_KEY"
    assert general["database_url"] == "os.environ/DATABASE_URL"
    assert general["store_prompts_in_spend_logs"] is False
    assert general["maximum_spend_logs_retention_period"] == "365d"  # prod keeps a year
    assert config["litellm_settings"]["turn_off_message_logging"] is True
    assert config["litellm_settings"]["ssl_verify"] == "/tls/ca.crt"
    assert config["litellm_settings"]["ssl_certificate"] == "/tls/client.pem"
    text = g.render_config(config)
    assert yaml.safe_load(text) == config
    assert "sk-" not in text


def test_storing_prompts_is_a_choice() -> None:
    gateway = prod_gateway().model_copy(update={"store_prompts": True})
    config = g.litellm_config(gateway, BACKENDS)
    assert config["general_settings"]["store_prompts_in_spend_logs"] is True
    assert config["litellm_settings"]["turn_off_message_logging"] is False


def test_vllm_backends_use_the_openai_compatible_route() -> None:
    config = g.litellm_config(prod_gateway(), BACKENDS, runtime="vllm")
    first = config["model_list"][0]["litellm_params"]
    assert first["model"] == "hosted_vllm/deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    assert first["api_base"] == "https://10.0.0.11:11434/v1"


def test_an_alias_without_a_backend_is_named() -> None:
    with pytest.raises(ConfigError, match=r"llmkit:gateway\.aliases\.reasoning\.model: no backend serves"):
        g.litellm_config(prod_gateway(), {"deepseek-r1:32b": BACKENDS["deepseek-r1:32b"]})


def test_key_requests_carry_the_role() -> None:
    gateway = prod_gateway()
    dev = g.key_request(gateway, "dev-test", alias="alice-laptop", owner="alice")
    assert dev == {
        "models": ["general", "reasoning", "default"],
        "allowed_routes": ["/v1/chat/completions", "/chat/completions"],
        "duration": "7d",
        "metadata": {"llmkit_role": "dev-test", "owner": "alice"},
        "max_budget": 50.0,
        "budget_duration": "30d",
        "rpm_limit": 60,
        "tpm_limit": 100000,
        "key_alias": "alice-laptop",
    }
    production = g.key_request(gateway, "production")
    assert production["allowed_routes"] == ["llm_api_routes"]
    assert production["metadata"]["rotate_after_seconds"] == 7 * 86400
    admin = g.key_request(gateway, "admin")
    assert admin["duration"] == "12h" and "max_budget" not in admin and "rpm_limit" not in admin
    with pytest.raises(ConfigError, match="unknown gateway role"):
        g.key_request(gateway, "intern")


def test_the_pinned_release_is_one_version_everywhere() -> None:
    release = g.litellm_release()
    assert release.requirement == f"litellm[proxy]=={release.version}"
    assert f"v{release.version}" in release.image
    requirements = (ROOT / "playbooks" / "files" / "gateway-requirements.txt").read_text()
    assert f"litellm=={release.version}" in requirements  # the hashed lock is for the same release
