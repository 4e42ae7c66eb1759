"""Example on-prem inventory: copy it to ``<site>.py`` and put your hosts in.

Run (from the repository root)::

    pyinfra playbooks/inventories/onprem.example.py playbooks/site.py

Groups (what ``site.py`` deploys on them):

- ``proxy``: the DMZ reverse proxies (nginx, TLS 1.3, client CIDRs, rate limits);
- ``gpu``: the model hosts (driver, CUDA, Ollama on 127.0.0.1, models, the mTLS terminator on
  ``model_port`` at ``model_bind_address``);
- ``monitoring``: the hosts that scrape every host's exporters;
- ``gateway`` (optional, commented out below): the LLM gateway (LiteLLM's proxy) between the
  proxies and the model hosts; with it, the proxies send every request to the gateways.

Host names are DNS names: they are the names ``llmkit pki issue`` gives the certificates
(``<pki_dir>/<name>.crt``). ``ssh_hostname`` is the address pyinfra connects to and the address
the firewall rules of the other hosts use, so give an IP address.

Where values go: per-host values in the host's dict; site-wide values in ``_SITE`` below, merged
into every group's data. Do not use an ``all = (...)`` group for data: ``group_data/all.py``
replaces it (see that file for every key, its default and what is accepted).

Nothing secret belongs here: key material comes from ``pki_dir`` (written by ``llmkit pki``,
outside the repository), SSH keys from your agent. The addresses are documentation ranges
(RFC 5737: 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) and private 10.x networks.
"""

# Names starting with "_" are not inventory groups (pyinfra ignores them).
_SITE = {
    # Networks the admins SSH from (required: the firewall refuses an empty list).
    "admin_cidrs": ["10.99.0.0/24"],
    # Networks whose clients may reach the proxies on 443 (required on proxies).
    "client_cidrs": ["198.51.100.0/24", "203.0.113.0/24"],
    # The name clients use; the proxy certificate must carry it.
    "proxy_server_name": "llm.example.com",
    # Controller directory written by `llmkit pki init` / `llmkit pki issue` (outside git).
    "pki_dir": "~/llmkit-pki",
    # Log in as a named admin with sudo; no root logins at all.
    "ssh_user": "llmkit-admin",
    "_sudo": True,
    "ssh_permit_root_login": "no",
}

proxy = (
    [
        ("proxy-1.llm.example.internal", {"ssh_hostname": "10.10.0.5"}),
        ("proxy-2.llm.example.internal", {"ssh_hostname": "10.10.0.6"}),
    ],
    {
        **_SITE,
        "rate_limit_per_second": 5,
        "rate_limit_burst": 20,
        "api_key_header": "X-API-Key",
    },
)

gpu = (
    [
        (
            "gpu-1.llm.example.internal",
            # model_bind_address: the model-tier address the TLS terminator listens on.
            {"ssh_hostname": "10.20.1.11", "model_bind_address": "10.20.1.11"},
        ),
        (
            "gpu-2.llm.example.internal",
            {"ssh_hostname": "10.20.1.12", "model_bind_address": "10.20.1.12"},
        ),
    ],
    {
        **_SITE,
        "require_gpu": True,
        "nvidia_driver_source": "distro",
        # "registry": pulled from the Ollama registry (needs its egress allowed). Hosts without
        # internet access use source "mirror": {"name": "deepseek-r1:32b", "source": "mirror"}
        # with models_mirror_url the mirror's base (e.g. "https://mirror.llm.example.internal/",
        # where `llmkit mirror push --to-dir/--to-http` published models/deepseek-r1-32b/): the
        # hosts verify the download against that mirror manifest (docs/mirror.md).
        "models": [{"name": "deepseek-r1:32b", "source": "registry"}],
        # App-tier hosts outside this inventory that may call the model hosts directly (besides
        # the proxies; the hosts of a `gateway` group below are admitted without being listed).
        "gateway_hosts": ["10.30.0.20"],
    },
)

monitoring = (
    [("mon-1.llm.example.internal", {"ssh_hostname": "10.40.0.9"})],
    {**_SITE},
)

# The LLM gateway (LiteLLM's proxy): uncomment to put it between the proxies and the gpu hosts.
# Its certificate needs the pool name and client usage:
#   llmkit pki issue ~/llmkit-pki gateway-1.llm.example.internal --server --client \
#       --san gateway.llmkit.internal --san IP:10.30.0.10
# and each gpu host's certificate its own address (LiteLLM verifies it): --san IP:10.20.1.11.
# The Prisma bundle is made once by an admin (playbooks/README.md) and put on the internal mirror.
# gateway = (
#     [("gateway-1.llm.example.internal", {"ssh_hostname": "10.30.0.10"})],
#     {
#         **_SITE,
#         "gateway": {
#             "aliases": {
#                 "reasoning": {"model": "deepseek-r1:32b"},
#                 "default": {"model": "deepseek-r1:32b"},
#             },
#             # Where LiteLLM's management API (keys, users, spend...) answers from, via the proxies.
#             "admin_cidrs": ["10.99.0.0/24"],
#         },
#         "gateway_pip_index_url": "https://pypi.llm.example.internal/simple",
#         "gateway_prisma_bundle": {
#             "url": "https://mirror.llm.example.internal/gateway/prisma-5.4.2-debian-openssl-3.0.x.tar.gz",
#             "sha256": "<sha256sum of the bundle>",
#         },
#         # Secrets (optional; made on the host when absent): read them from your secret store,
#         # never write them here.
#         # "gateway_master_key": my_vault.read("llmkit/gateway-master-key"),
#         # "gateway_database_url": my_vault.read("llmkit/gateway-database-url"),
#     },
# )
