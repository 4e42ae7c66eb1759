#!/bin/bash
# llmkit model host: launch glue, rendered by components/fleet.py (GpuFleet) into the launch
# template's user data. Placeholders are two at-signs and a braced name; every value is
# shell-quoted when it is rendered. Nothing here is secret: whoever may call
# ec2:DescribeInstanceAttribute can read user data.
#
# What this script does, and nothing more (the host steps themselves - driver check, runtime,
# model, TLS terminator, exporters - are the pyinfra deploys in playbooks/, written once):
#   1. fetch the bootstrap bundle from s3://<model store>/bootstrap/ through the S3 gateway endpoint
#   2. check every file against the bundle's manifest.json (sha256 and size; nothing unlisted);
#      a bundle that does not check out is fetched again (4 attempts, 30/60/90 s apart: a push
#      may have been in progress), then the launch is abandoned
#   3. create a virtualenv from the bundled wheels (pip install --no-index)
#   4. write this host's data and a one-group pyinfra inventory to /etc/llmkit (with the host's
#      model-tier address from the instance metadata)
#   5. run the host deploy: pyinfra <inventory> site.py, from the bundle's playbooks/
#   6. wait until the model server answers, then complete the launch lifecycle action (CONTINUE)
# On any failure the EXIT trap completes the lifecycle action with ABANDON: Auto Scaling then
# terminates the instance and launches another. If even that call fails, the hook's default
# result (ABANDON) applies when its heartbeat timeout runs out.
#
# The script installs itself as a cloud-init per-boot script: an instance of a warm pool boots
# again when it leaves the pool, and Auto Scaling waits on the launch hook a second time then.
# On those boots steps 1-5 are done already; only step 6 runs.
set -Eeuo pipefail
umask 027

# --- rendered by components/fleet.py -------------------------------------------------------------
readonly REGION=@@{region}
readonly S3_ENDPOINT=@@{s3_endpoint}
readonly BOOTSTRAP_URL=@@{bootstrap_url}
readonly MANIFEST_SHA256=@@{manifest_sha256}
readonly ASG_NAME=@@{asg_name}
readonly HOOK_NAME=@@{hook_name}
readonly MODEL_PORT=@@{model_port}
readonly HEALTH_PATH=@@{health_path}
readonly READY_TIMEOUT_SECONDS=@@{ready_timeout_seconds}
readonly INVENTORY_GROUP=@@{inventory_group}
readonly HOST_DEPLOY=@@{host_deploy}

# --- where things go on the host ----------------------------------------------------------------
# LLMKIT_ROOT only exists so that tests can run this script in a scratch directory; cloud-init
# runs it without it, with everything below in its place on the host.
readonly ROOT=${LLMKIT_ROOT:-}
readonly ETC_DIR=$ROOT/etc/llmkit
readonly STATE_DIR=$ROOT/var/lib/llmkit
readonly OPT_DIR=$ROOT/opt/llmkit
readonly BUNDLE_DIR=$OPT_DIR/bootstrap
readonly VENV=$OPT_DIR/venv
readonly PER_BOOT_SCRIPT=$ROOT/var/lib/cloud/scripts/per-boot/llmkit-model-host.sh
readonly IMDS=http://169.254.169.254/latest
readonly BUNDLE_ATTEMPTS=4 BUNDLE_RETRY_SECONDS=30

export AWS_DEFAULT_REGION=$REGION AWS_RETRY_MODE=standard AWS_MAX_ATTEMPTS=5
: "${HOME:=/root}"
export HOME

log() { echo "llmkit: $*" >&2; }

imds() {
  # IMDSv2 only (the launch template requires tokens, hop limit 1).
  local token
  token=$(curl --silent --show-error --fail --max-time 5 -X PUT "$IMDS/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
  curl --silent --show-error --fail --max-time 5 -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/$1"
}

complete_lifecycle() {
  local result=$1 instance_id
  instance_id=$(imds instance-id)
  log "completing lifecycle hook $HOOK_NAME of $ASG_NAME for $instance_id: $result"
  aws autoscaling complete-lifecycle-action --region "$REGION" \
    --auto-scaling-group-name "$ASG_NAME" --lifecycle-hook-name "$HOOK_NAME" \
    --instance-id "$instance_id" --lifecycle-action-result "$result"
}

on_exit() {
  local status=$?
  if ((status != 0)); then
    log "model host setup failed (exit $status): abandoning this launch"
    complete_lifecycle ABANDON || log "could not report ABANDON; the hook's default result (ABANDON) applies at its timeout"
  fi
  exit "$status"
}

fetch_bundle() {
  # A host that launches while `llmkit mirror push` replaces the bundle sees new files beside the
  # old manifest (or changed files) and refuses them; the push ends with the manifest and the
  # removal of what it no longer lists, so a later attempt finds a whole bundle.
  local attempt
  for ((attempt = 1; attempt <= BUNDLE_ATTEMPTS; attempt++)); do
    if fetch_bundle_once; then
      return 0
    fi
    if ((attempt < BUNDLE_ATTEMPTS)); then
      log "the bootstrap bundle was not whole (attempt $attempt of $BUNDLE_ATTEMPTS; a push in progress?): again in $((attempt * BUNDLE_RETRY_SECONDS)) s"
      sleep $((attempt * BUNDLE_RETRY_SECONDS))
    fi
  done
  log "the bootstrap bundle did not verify after $BUNDLE_ATTEMPTS attempts"
  return 1
}

fetch_bundle_once() {
  # Called in a condition, where bash ignores set -e: every step is checked explicitly.
  local partial=$BUNDLE_DIR.partial
  rm -rf "$partial" || return 1
  install -d -m 0750 "$partial" || return 1
  # The regional endpoint: the model tier reaches S3 only through the VPC's gateway endpoint.
  aws s3 cp --recursive --only-show-errors --region "$REGION" --endpoint-url "$S3_ENDPOINT" \
    "$BOOTSTRAP_URL" "$partial" || return 1
  verify_bundle "$partial" || return 1
  rm -rf "$BUNDLE_DIR" || return 1
  mv "$partial" "$BUNDLE_DIR"
}

verify_bundle() {
  local dir=$1
  if [[ -n "$MANIFEST_SHA256" ]]; then
    # The manifest itself is pinned by the launch template: a changed bundle needs a new template.
    echo "$MANIFEST_SHA256  $dir/manifest.json" | sha256sum --check --strict --quiet - || return 1
  fi
  python3 - "$dir" <<'VERIFY'
import hashlib
import json
import os
import sys

root = os.path.realpath(sys.argv[1])
with open(os.path.join(root, "manifest.json"), encoding="utf-8") as f:
    entries = json.load(f)["files"]
listed = set()
for entry in entries:
    path = entry["path"]
    parts = path.split("/")
    if path.startswith("/") or "" in parts or "." in parts or ".." in parts or path == "manifest.json":
        sys.exit(f"manifest.json: refused path {path!r}")
    full = os.path.join(root, path)
    if os.path.islink(full) or not os.path.isfile(full):
        sys.exit(f"manifest.json: {path} is missing from the bundle")
    digest = hashlib.sha256()
    with open(full, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if os.path.getsize(full) != entry["size"] or digest.hexdigest() != entry["sha256"].lower():
        sys.exit(f"manifest.json: {path} does not match its size and sha256")
    listed.add(path)
found = {
    os.path.relpath(os.path.join(d, name), root)
    for d, _, names in os.walk(root)
    for name in names
}
unlisted = sorted(found - listed - {"manifest.json"})
if unlisted:
    sys.exit(f"manifest.json does not list: {', '.join(unlisted)}")
print(f"llmkit: bootstrap bundle verified: {len(listed)} files", file=sys.stderr)
VERIFY
}

install_venv() {
  # pip runs from its own wheel: no pip, ensurepip or index is needed on the host.
  local pip_wheels=("$BUNDLE_DIR"/wheels/pip-*.whl)
  if ((${#pip_wheels[@]} != 1)) || [[ ! -f "${pip_wheels[0]}" ]]; then
    log "the bootstrap bundle must hold exactly one wheels/pip-*.whl"
    return 1
  fi
  rm -rf "$VENV"
  python3 -m venv --without-pip "$VENV"
  "$VENV/bin/python" "${pip_wheels[0]}/pip" install --no-index --no-cache-dir --only-binary=:all: \
    --find-links "$BUNDLE_DIR/wheels" --requirement "$BUNDLE_DIR/requirements.txt"
}

write_host_data() {
  install -d -m 0755 "$ETC_DIR"
  cat >"$ETC_DIR/host-data.json.new" <<'HOST_DATA'
@@{host_data_json}
HOST_DATA
  mv "$ETC_DIR/host-data.json.new" "$ETC_DIR/host-data.json"
  # The host's model-tier address, from the instance metadata (not from the default route): the
  # TLS terminator listens there, where the load balancer sends traffic and health checks.
  local address
  address=$(imds local-ipv4)
  [[ "$address" =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]] || { log "no IPv4 address from the instance metadata"; return 1; }
  # One group, named as in GpuFleet.inventory(), whose data is this host's data.
  cat >"$ETC_DIR/inventory.py.new" <<INVENTORY
import json
from pathlib import Path

_data = json.loads(Path(__file__).with_name("host-data.json").read_text(encoding="utf-8"))
_data.setdefault("model_bind_address", "$address")
$INVENTORY_GROUP = (["@local"], _data)
INVENTORY
  mv "$ETC_DIR/inventory.py.new" "$ETC_DIR/inventory.py"
}

run_deploy() {
  # --chdir: the bundle's playbooks/ directory, so its group_data/ (defaults) applies as on bare metal.
  # umask 022 as over SSH: the deploys set modes where they matter, and the rest (an unpacked
  # release under /opt, say) must stay readable by the service users, which 027 would prevent.
  (
    umask 022
    "$VENV/bin/pyinfra" --yes --chdir "$BUNDLE_DIR/playbooks" "$ETC_DIR/inventory.py" "$HOST_DEPLOY"
  )
}

install_per_boot() {
  install -d -m 0755 "$(dirname "$PER_BOOT_SCRIPT")"
  if [[ "$(readlink -f "${BASH_SOURCE[0]}")" != "$(readlink -f "$PER_BOOT_SCRIPT")" ]]; then
    install -m 0700 "${BASH_SOURCE[0]}" "$PER_BOOT_SCRIPT"
  fi
}

wait_until_ready() {
  # The TLS terminator listens on the host's model-tier address (Ollama alone has loopback), which
  # is where the load balancer's health checks arrive. Its certificate is not checked here: the
  # load balancer does not verify target certificates either.
  local address url
  address=$(imds local-ipv4)
  url="https://$address:$MODEL_PORT$HEALTH_PATH"
  until curl --silent --fail --insecure --max-time 10 --output /dev/null "$url"; do
    if ((SECONDS >= READY_TIMEOUT_SECONDS)); then
      log "the model server did not answer $url within $READY_TIMEOUT_SECONDS s"
      return 1
    fi
    sleep 10
  done
  log "the model server answers $url"
}

main() {
  trap on_exit EXIT
  trap 'log "line $LINENO: \"$BASH_COMMAND\" failed"' ERR
  local first_boot=0
  if [[ ! -f "$STATE_DIR/bootstrapped" ]]; then
    first_boot=1
    fetch_bundle
    install_venv
    write_host_data
    run_deploy
    install -d -m 0700 "$STATE_DIR"
    date -u +%Y-%m-%dT%H:%M:%SZ >"$STATE_DIR/bootstrapped"
    install_per_boot
  fi
  wait_until_ready
  if ! complete_lifecycle CONTINUE; then
    # After an ordinary reboot of an instance in service no launch is pending: nothing to complete.
    ((first_boot == 0)) || return 1
    log "no pending launch lifecycle action to complete"
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  main "$@"
fi
