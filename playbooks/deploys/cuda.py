"""CUDA toolkit from NVIDIA's signed repository, only when the host's driver can run it.

The toolkit version is host data ``cuda_version`` ("12.8"; None: the newest the version
matrix allows for the driver; "none": no toolkit). The driver it is checked against is the
one the host will have after :func:`playbooks.deploys.gpu_driver.gpu_driver`: the working
driver it keeps, or the branch it installs. An incompatible pair fails while the deploy is
planned, before any operation runs, with the error naming the toolkit, the driver and the
minimum driver (``llmkit.versions.check_cuda``). Hosts without an NVIDIA GPU are skipped.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import DeployError
from pyinfra.operations import apt

from llmkit.errors import ConfigError
from llmkit.versions import Cuda, Versions, load_versions
from playbooks.deploys.gpu_driver import DriverPlan, distro_id, nvidia_repo, plan_driver, require_x86_64


def choose_toolkit(versions: Versions, plan: DriverPlan, requested: str | None) -> Cuda:
    """The toolkit to install for this driver plan; IncompatibleCudaError when it cannot run."""
    if plan.driver_version is not None:
        if requested is None:
            found = versions.cuda_for_driver(plan.driver_version)
            if found is None:
                raise DeployError(
                    f"{host.name}: driver {plan.driver_version} runs none of the CUDA toolkits "
                    f"in the version matrix ({', '.join(versions.cuda)})"
                )
            return found
        versions.check_cuda(requested, plan.driver_version)
        return versions.toolkit(requested)
    if requested is None:
        found = versions.cuda_for_branch(plan.branch)
        if found is None:
            raise DeployError(f"{host.name}: driver branch {plan.branch} runs no CUDA toolkit in the matrix")
        return found
    versions.check_cuda_branch(requested, plan.branch)
    return versions.toolkit(requested)


@deploy("CUDA toolkit")
def cuda() -> None:
    raw = host.data.get("cuda_version")
    if raw is not None and str(raw).lower() == "none":
        host.noop("cuda_version is 'none': CUDA toolkit skipped")
        return
    requested = None if raw is None else str(raw)
    versions = load_versions()
    plan = plan_driver(versions)
    if plan.action == "skip":
        host.noop(f"{plan.reason}: CUDA toolkit skipped")
        return
    toolkit = choose_toolkit(versions, plan, requested)
    require_x86_64()
    distro = distro_id()
    if distro not in toolkit.repos:
        raise ConfigError(
            key="cuda_version",
            value=toolkit.version,
            accepted=", ".join(v for v, c in versions.cuda.items() if distro in c.repos),
            message=f"NVIDIA's {distro} repository has no CUDA {toolkit.version}",
        )
    nvidia_repo(versions, distro)
    apt.packages(name=f"Install CUDA toolkit {toolkit.version}", packages=[toolkit.package])
