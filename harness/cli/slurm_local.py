"""`ebt-scaling slurm-local start|stop|status`: a real two-node SLURM cluster on this
machine (Debian/Ubuntu, root): installs slurm-wlm, munge, slurmdbd and MariaDB, writes the
config (never over a slurm.conf it did not write), starts slurmctld and one slurmd per node
(each node in its own network and UTS namespace) and waits for both nodes. Idempotent; used
by .ci/run."""
from __future__ import annotations

import os
import subprocess
from importlib import resources

from ebt_scaling.harness.contract.errors import ConfigError


def script_path() -> str:
    return str(resources.files("ebt_scaling.harness") / "slurm_local.sh")


def add_arguments(parser) -> None:
    parser.add_argument("action", choices=["start", "stop", "status", "script"],
                        help="start (install if needed), stop, status, or print the script's path")
    parser.add_argument("--no-accounting", action="store_true",
                        help="skip MariaDB + slurmdbd (then sacct has no data and killed jobs look alive)")
    parser.add_argument("--wait", type=int, default=90, help="seconds to wait for the daemons (default 90)")


def run(args) -> int:
    path = script_path()
    if args.action == "script":
        print(path)
        return 0
    if not os.path.isfile(path):
        raise ConfigError(f"{path}: the packaged SLURM script is missing; reinstall ebt-scaling")
    env = dict(os.environ, SLURM_WAIT_S=str(args.wait))
    if args.no_accounting:
        env["SLURM_ACCOUNTING"] = "0"
    try:
        return subprocess.run(["bash", path, args.action], env=env).returncode
    except OSError as exc:
        raise ConfigError(f"cannot run bash {path}: {exc.strerror}") from None
