"""Defaults for every host: each host-data key the deploys read, with its secure default.

pyinfra reads this file as the data of the group ``all`` when it finds it as ``group_data/all.py``
beside the working directory (``pyinfra --chdir playbooks ...``, as the AWS user data runs it) or
when given ``--group-data playbooks/group_data``. ``site.py`` fills in any key still missing from
this file, so ``pyinfra playbooks/inventories/<site>.py playbooks/site.py`` from the repository
root gets the same defaults.

Precedence (pyinfra): host data > inventory group data (``gpu = ([...], {...})``) > this file.
Caution: when pyinfra loads this file it *replaces* the same keys of an inventory file's own
``all = ([...], {...})`` data, so put site-wide values in each group's data or each host's data,
never in an inventory ``all`` group. For that reason every default lives here and there are no
``gpu.py`` / ``proxy.py`` / ``monitoring.py`` files: such a file would replace the data an
inventory gives that group.

Keys without a site-independent value (``admin_cidrs``, ``client_cidrs``, ``proxy_server_name``)
default to "nothing", and the deploy that needs them refuses to run until the inventory sets them.
Versions and checksums default to None, "the pinned default": the numbers live once, in
``llmkit/data/versions.yaml`` and ``llmkit/data/artifacts.yaml``.

Plain assignments only: pyinfra turns every top-level name of this file into host data.
"""

# --- GPU: driver, CUDA, container toolkit (gpu hosts and AWS model_<slug> hosts) ----------------

# Fail the deploy when no NVIDIA GPU is found (True), or warn and skip the driver steps (False,
# so a CPU-only test host can run the rest). Accepted: True | False.
require_gpu = False

# NVIDIA driver branch to install, e.g. "570" or "580". None: the matrix default branch
# (llmkit/data/versions.yaml). Only supported branches of the matrix are accepted.
nvidia_driver_branch = None

# Where the driver comes from: "distro" (the distribution's signed packages, the default) or
# "nvidia" (NVIDIA's CUDA apt repository, its signing key pinned in the matrix).
nvidia_driver_source = "distro"

# An internal mirror of NVIDIA's apt repositories (the CUDA repo and libnvidia-container), as an
# http(s) base URL under which NVIDIA's paths are kept: https://mirror.internal/nvidia serves
# /compute/cuda/repos/<distro>/x86_64/ and /libnvidia-container/stable/deb/... . None: NVIDIA's
# own servers. Signing keys are still checked against the pinned fingerprints.
nvidia_repo_mirror = None

# Kernel module flavour: "open" | "proprietary". None: the matrix default (open on Turing+).
nvidia_kernel_module = None

# A driver newer than the chosen branch is already installed: leave it (False, the default: a
# downgrade can break running workloads) or replace it with the chosen branch (True).
nvidia_driver_replace_newer = False

# CUDA toolkit version, e.g. "12.8". None: the newest the matrix allows for the host's driver;
# "none": install no toolkit (Ollama ships its own CUDA runtime). A version the driver cannot run
# is refused before any change.
cuda_version = None

# Install the NVIDIA container toolkit (only for containerised runtimes; Ollama runs as a systemd
# service and does not need it). Accepted: True | False.
container_toolkit = False

# --- Ollama --------------------------------------------------------------------------------------

# Ollama release to install, e.g. "0.6.5". None: the pinned version (llmkit/data/artifacts.yaml).
ollama_version = None

# sha256 of the release archive. None: the pinned checksum of the pinned version. Set it (64 hex)
# when ollama_mirror_url serves another build; a download that does not match is refused.
ollama_sha256 = None

# Where to download the release from. None: the official release URL of the pinned artifact;
# else an internal mirror, an http(s):// or file:// URL: <mirror>/ollama/v<version>/<file>, or a
# template holding {version}, {arch} and {file}. The pinned (or ollama_sha256) checksum applies.
# A file:// mirror must be under the accepted roots (see ollama_models_path), e.g. file:///srv/mirror.
ollama_mirror_url = None

# Address Ollama listens on (an IP address). Keep "127.0.0.1": clients reach it only through the
# TLS terminator on model_port; any other address exposes plain-HTTP, unauthenticated Ollama.
ollama_bind = "127.0.0.1"

# Accept a wildcard ollama_bind (0.0.0.0, ::). False: refused. Accepted: True | False.
ollama_allow_any_address = False

# Port of Ollama on ollama_bind (1-65535).
ollama_port = 11434

# Where Ollama keeps model blobs (on AWS the encrypted model-cache volume). It is chown'ed to the
# ollama user and writable in its unit; its parent holds the models deploy's staging directory and
# is where the model cache volume is mounted. Accepted (playbooks/deploys/host_paths.py): an
# absolute path without '.'/'..' components, it and its parent equal to or below /var/lib/ollama,
# /var/lib/llmkit or /opt/llmkit, or below /srv/, /mnt/ or /data/ (e.g. /srv/llm/models, not
# /srv/models); never a system path. A symbolic link on the host is followed and checked too.
ollama_models_path = "/var/lib/ollama/models"

# The AWS model hosts' model cache volume, from the fleet's host data: {"device_name": "/dev/sdf",
# "size_gib": N}. The model_cache deploy finds that disk (by size: NVMe names differ), gives it an
# ext4 file system labelled llmkit-models if it has none, and mounts it at the parent of
# ollama_models_path (with an /etc/fstab line). None (bare metal): nothing is mounted.
model_cache = None

# OLLAMA_NUM_PARALLEL: requests served at once per model (integer >= 1). None: the first model's
# "concurrency" (AWS host data has it), else not set (Ollama decides from the free memory).
ollama_num_parallel = None

# OLLAMA_MAX_LOADED_MODELS: models kept loaded at once (integer >= 1). None: not set (Ollama's
# default).
ollama_max_loaded_models = None

# OLLAMA_KEEP_ALIVE: how long an idle model stays loaded ("5m", "24h", "-1" for ever). None: not
# set (Ollama's default).
ollama_keep_alive = None

# --- models --------------------------------------------------------------------------------------

# Models Ollama serves, each a dict: {"name": "deepseek-r1:32b", "source": "registry" (the
# default: `ollama pull`) | "mirror"}. "mirror" (verified by sha256) is the way for hosts without
# internet access, in one of two forms:
# - the manifest form, {"name": "tiny-r1", "source": "mirror"} without "file" and "sha256": the
#   host reads the mirror manifest `llmkit mirror push` published at
#   <models_mirror_url>/<"manifest">, "manifest" (a relative path) defaulting to
#   "models/<slug of the served name>/manifest.json" ("tiny-r1:latest" -> models/tiny-r1-latest/),
#   and downloads its one "gguf" file (and "modelfile", if listed) verified by the manifest's
#   sha256 and size. Multi-part GGUFs ("gguf-part") are refused. "modelfile" may still add
#   directives as text; "size" and a {"file", "sha256"} "modelfile" are refused here.
# - the explicit form: "file" (its path under models_mirror_url), "sha256" (64 hex) and "size"
#   (bytes), and optionally "modelfile" (directives as text, or {"file", "sha256"} on the mirror).
# Either form may set "tag" (the served name) and "context_length" (PARAMETER num_ctx). AWS host
# data gives {name, tag, quantization, context_length, concurrency, slug, hf_repo} per model.
# Default: none.
models: list[dict[str, object]] = []

# URL of the internal model mirror for source "mirror" models, as the hosts reach it (an
# http(s):// or file:// URL, or an absolute path of a mount). It is the mirror's base (the
# directory that holds models/, where `llmkit mirror push --to-dir/--to-http` publish): the
# manifest form's default path starts with models/. Explicit "file" entries and an explicit
# "manifest" are relative to it whatever it is (the lab sets it to <url>/models/ with explicit
# entries). None: no mirror (only "registry" models can be pulled). A mirror on the host (file:// or
# an absolute path) must be under the accepted roots (see ollama_models_path).
models_mirror_url = None

# Remove models present on the host but not listed in `models` (True), or leave them (False).
prune_models = False

# --- TLS / PKI -----------------------------------------------------------------------------------

# Controller directory holding ca.crt and <inventory host name>.crt/.key as `llmkit pki init` /
# `llmkit pki issue` write them. None: take the PEM text from tls_cert / tls_key / tls_ca.
pki_dir = None

# PEM text of the host's certificate, its private key and the CA certificate (used when pki_dir
# is None). Never commit keys to an inventory: read them from a file or a secret store there.
tls_cert = None
tls_key = None
tls_ca = None

# Port of the TLS terminator on a model host (mTLS with the CA above; the proxy connects to it).
model_port = 11434

# The model host's model-tier address the TLS terminator binds to (an IP address). None: the
# source address of the host's IPv4 default route.
model_bind_address = None

# --- reverse proxy (proxy hosts) -----------------------------------------------------------------

# The public host name clients use (nginx server_name and the certificate's name). None: refused
# on proxy hosts until set.
proxy_server_name = None

# Client networks allowed to reach the proxy on 443, CIDR strings (IPv4 or IPv6). Empty: refused
# on proxy hosts (a proxy nobody may reach).
client_cidrs: list[str] = []

# Client CA for mutual TLS at the proxy: PEM text or a controller path. None: no client
# certificates (then set api_key_header or restrict client_cidrs tightly).
mtls_client_ca = None

# Per-client-address request rate (requests per second, integer >= 1) and burst (integer >= 0).
rate_limit_per_second = 5
rate_limit_burst = 20

# HTTP header that must carry an API key (e.g. "X-API-Key"); also the rate limit's key. None: no
# API key required at the proxy.
api_key_header = None

# Largest request body nginx accepts ("1m", "512k"...).
client_max_body_size = "1m"

# Days the proxy's access logs are kept (integer >= 1; 180 meets common audit requirements).
log_retention_days = 180

# --- host firewall (nftables) --------------------------------------------------------------------

# Networks allowed to SSH in, CIDR strings. Empty: refused (the admins would be locked out).
admin_cidrs: list[str] = []

# App-tier hosts (IP addresses or CIDRs) allowed to reach model_port on gpu hosts directly, besides
# the proxy hosts and the inventory's `gateway` group (admitted automatically). Default: none.
gateway_hosts: list[str] = []

# --- egress of the model hosts (gpu and model_<slug> hosts with no other role) -------------------
# Outbound connections are refused except to: replies, loopback, DHCP, ICMP errors; DNS; NTP; the
# mirrors of models_mirror_url, ollama_mirror_url, exporters_mirror_url (and nvidia_repo_mirror
# when NVIDIA's repositories are used) when their URLs name an IP address; for an s3:// model
# store, the instance metadata service and the host's AWS_ENDPOINT_URL(_S3) when it is an address;
# apt's proxy (or, without one, its sources) when it is an address; and egress_allow. The firewall
# allows addresses, never names: a source given by a DNS name (a mirror, apt's sources, GitHub and
# the Ollama registry when no mirror is set) must have its addresses in egress_allow; the deploy
# warns, naming the key, when egress_allow has no entry on that port.

# DNS servers (IP addresses) a model host may query (udp and tcp 53). None: the name servers the
# host uses (/etc/resolv.conf, and systemd-resolved's upstreams); []: none.
dns_servers = None

# NTP servers (IP addresses) a model host may reach (udp 123), e.g. ["169.254.169.123"] (Amazon
# Time Sync). Default: none.
ntp_servers: list[str] = []

# Everything else a model host must reach: log and metric targets, mirrors named by DNS names, the
# S3 prefix list and interface endpoints on AWS. Entries "ADDRESS[/PREFIX]:PORT" (TCP) or
# "ADDRESS[/PREFIX]:PORT/udp", IPv6 in brackets: "[2001:db8::5]:443". A /0 is refused (use
# egress_allow_any). Default: none.
egress_allow: list[str] = []

# Turn the model hosts' egress allow-list off (outbound open, as on the other hosts): an explicit,
# unsafe choice, said in the ruleset. Accepted: True | False.
egress_allow_any = False

# --- LLM gateway (gateway hosts: LiteLLM's proxy, playbooks/deploys/gateway.py) -------------------

# The gateway's configuration: a mapping with the shape of the stack's llmkit:gateway section
# (aliases, roles, admin_cidrs, num_retries, retry_backoff_seconds, allowed_fails,
# cooldown_seconds, request_timeout_seconds, log_retention_days, store_prompts...), validated by
# the same schema (an error names the key, e.g. gateway.aliases.general.model). Every alias's model
# must be a catalog model that a gpu host lists in its `models`. gateway.admin_cidrs is also where
# the proxies admit LiteLLM's management API from (403 elsewhere). Give it in the gateway group's
# data (the proxies read it there too). None: refused on gateway hosts.
gateway = None

# Port LiteLLM listens on (TLS) at gateway_bind_address; the firewall admits it from the proxies
# only. None: the pinned release's port (llmkit/data/gateway.yaml, 4000).
gateway_port = None

# The gateway host's address LiteLLM listens on and the proxies connect to (an IP address). None:
# ssh_hostname when it is an IP address, else the source address of the IPv4 default route.
gateway_bind_address = None

# PyPI simple index the gateway's virtualenv is installed from (pip --require-hashes, every
# package pinned by hash in playbooks/files/gateway-requirements.txt), an http(s):// URL: an
# internal mirror (devpi, Artifactory, Nexus) for hosts without internet access. Credentials in
# the URL are masked in pyinfra's output.
gateway_pip_index_url = "https://pypi.org/simple"

# HTTP(S) proxy pip goes through ("http://[user:password@]proxy:3128"), masked in pyinfra's
# output. None: no proxy.
gateway_pip_proxy = None

# The Prisma bundle (Prisma CLI and engines for LiteLLM's database layer; playbooks/README.md says
# what it holds and how to make it) on the internal mirror: {"url": "https://mirror/...tar.gz" or
# "file:///...", "sha256": "<64 hex>", "size": <bytes, optional>, "binary_target":
# "debian-openssl-3.0.x" (the default)}. None: refused on gateway hosts, before any change.
gateway_prisma_bundle = None

# SECRET, read it from a secret store in the inventory: LiteLLM's master key ("sk-" and at least
# 16 more characters). None: a random key is made on the host at the first run and kept in
# /etc/llmkit/gateway/secrets.env (root only); read it there.
gateway_master_key = None

# SECRET: an external PostgreSQL for keys and spend logs,
# "postgresql://USER:PASSWORD@HOST:5432/DB?sslmode=require" (or verify-ca / verify-full; anything
# weaker is refused). None: the distribution's PostgreSQL on the gateway host, on 127.0.0.1 with
# TLS, its password made on the host.
gateway_database_url = None

# --- hardening -----------------------------------------------------------------------------------

# sshd PermitRootLogin: "prohibit-password" (keys only, the default) or "no" (admins log in as a
# named user and sudo). "yes" is refused.
ssh_permit_root_login = "prohibit-password"

# Daily unattended security updates (Ubuntu and Debian). Accepted: True | False.
unattended_upgrades = True

# --- monitoring ----------------------------------------------------------------------------------

# node_exporter port on every host, and the NVIDIA GPU exporter port on gpu hosts; reachable only
# from the `monitoring` group's hosts, which scrape the inventory's hosts as targets.
node_exporter_port = 9100
gpu_exporter_port = 9835
# The proxy hosts' SLO metrics (mtail reading the JSON access log), scraped by the monitoring hosts.
proxy_metrics_port = 3903

# Air-gapped hosts: an internal mirror laid out as <mirror>/<name>/v<version>/<file> (e.g.
# https://mirror.internal/ serves node_exporter/v1.9.1/node_exporter-1.9.1.linux-amd64.tar.gz),
# an http(s):// or file:// URL (file:// under the accepted roots, see ollama_models_path). None:
# the official GitHub releases. The pinned checksums apply either way, unless
# node_exporter_sha256 / gpu_exporter_sha256 (64 hex) name a mirror's own build.
exporters_mirror_url = None
node_exporter_sha256 = None
gpu_exporter_sha256 = None
