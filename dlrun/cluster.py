"""How many processes run this command together, and which one this is: read from the environment alone.

Three launchers are recognised, in this order:

- Keras' own variables (`KERAS_DISTRIBUTION_NUM_PROCESSES`, `KERAS_DISTRIBUTION_PROCESS_ID`,
  `KERAS_DISTRIBUTION_JOB_ADDRESSES`), set by hand or by a launch script;
- Slurm's `srun`: the variables JAX's own Slurm detection reads (`SLURM_JOB_ID`, `SLURM_STEP_NODELIST`,
  `SLURM_NTASKS`, `SLURM_PROCID`, `SLURM_LOCALID`). A batch script run without `srun` has no step node list:
  it is one process, whatever `SLURM_NTASKS` says;
- Open MPI's `mpirun` (`OMPI_COMM_WORLD_SIZE`, `OMPI_COMM_WORLD_RANK`).

Nothing here imports JAX: the decision is made before the backend starts, so a wrong setup costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from dlrun.errors import RecipeError

SLURM = ("SLURM_JOB_ID", "SLURM_STEP_NODELIST", "SLURM_NTASKS", "SLURM_PROCID", "SLURM_LOCALID")
# jax.distributed finds the coordinator of an Open MPI job through this (Open MPI 4's mpirun sets it).
OMPI_URI = "OMPI_MCA_orte_hnp_uri"


@dataclass(frozen=True)
class Processes:
    """The processes launched together: how many, this one's rank, and where the numbers came from."""

    count: int
    rank: int
    source: str  # e.g. "SLURM_NTASKS=2"; "" for a single process started by hand
    launcher: str  # "keras", "slurm", "ompi" or "" (none)


def _int(name: str) -> int:
    value = os.environ.get(name, "")
    try:
        return int(value)
    except ValueError:
        raise RecipeError(f"environment variable {name}={value!r} is not a whole number") from None


def processes() -> Processes:
    """This command's processes according to the environment (one, rank 0, when no launcher is recognised)."""
    env = os.environ
    if env.get("KERAS_DISTRIBUTION_NUM_PROCESSES"):
        count = _int("KERAS_DISTRIBUTION_NUM_PROCESSES")
        rank = _int("KERAS_DISTRIBUTION_PROCESS_ID") if env.get("KERAS_DISTRIBUTION_PROCESS_ID") else 0
        return Processes(count, rank, f"KERAS_DISTRIBUTION_NUM_PROCESSES={count}", "keras")
    if all(name in env for name in SLURM):
        count = _int("SLURM_NTASKS")
        return Processes(count, _int("SLURM_PROCID"), f"Slurm's SLURM_NTASKS={count}", "slurm")
    if env.get("OMPI_COMM_WORLD_SIZE"):
        count = _int("OMPI_COMM_WORLD_SIZE")
        rank = _int("OMPI_COMM_WORLD_RANK") if env.get("OMPI_COMM_WORLD_RANK") else 0
        return Processes(count, rank, f"Open MPI's OMPI_COMM_WORLD_SIZE={count}", "ompi")
    return Processes(1, 0, "", "")


def check_one_run(strategy: str | None) -> Processes:
    """Refuse N processes that would each train the whole recipe alone (no distribution, or a one-process
    strategy): one line saying what to set. Returns the processes otherwise."""
    found = processes()
    if found.count > 1 and strategy in (None, "mirrored"):
        asked = "no train.distribute" if strategy is None else "train.distribute: mirrored (one process)"
        raise RecipeError(
            f"{found.source} says {found.count} processes run this command, but the recipe has {asked}, so each "
            "would train the whole recipe alone: set `train.distribute: data_parallel` (backend: jax) to train "
            "one model together, or start a single process",
            path=("train", "distribute") if strategy else ("train",),
        )
    return found


def initialize_arguments(found: Processes) -> dict[str, object]:
    """`keras.distribution.initialize`'s arguments for these processes. Slurm and Open MPI 4 leave all three to
    jax.distributed's own cluster detection; Keras' variables, or an Open MPI without a launcher URI, name them."""
    if found.launcher == "slurm" or (found.launcher == "ompi" and OMPI_URI in os.environ):
        return {}
    address = os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES")
    if not address:
        raise RecipeError(
            f"{found.source}: set KERAS_DISTRIBUTION_JOB_ADDRESSES to process 0's host:port (the coordinator) on "
            "every process",
            path=("train", "distribute", "strategy"),
        )
    return {"job_addresses": address, "num_processes": found.count, "process_id": found.rank}


def local_address_towards(address: str) -> str:
    """This machine's address on the route to `host:port` (no packet is sent: a UDP socket is only connected)."""
    import socket

    host = address.rsplit(":", 1)[0].strip("[]")
    family, kind, proto, _, target = socket.getaddrinfo(host, 9, type=socket.SOCK_DGRAM)[0]
    with socket.socket(family, kind, proto) as probe:
        probe.connect(target)
        return str(probe.getsockname()[0])


def advertise_reachable_gloo_address() -> None:
    """Make JAX's CPU collectives (Gloo) listen on, and advertise, the address that reaches the coordinator.

    Left alone, Gloo advertises whatever this machine's hostname resolves to; where /etc/hosts maps the
    hostname to a loopback address (Debian's 127.0.1.1, containers' 127.0.0.1), every other host is told to
    connect to its own loopback and the first collective fails ("Connection refused"). Called before
    jax.distributed.initialize; the coordinator's address is read when JAX makes its CPU client, just after.
    JAX offers no setting for this, so its factory function is wrapped (left as is if JAX's internals moved).
    """
    try:
        from jax._src import distributed
        from jax._src.lib import _jax

        make = _jax.make_gloo_tcp_collectives
    except (ImportError, AttributeError):
        return
    if getattr(make, "dlrun_wrapped", False):
        return

    def make_gloo(distributed_client: object, hostname: str | None = None, interface: str | None = None) -> object:
        coordinator = getattr(distributed.global_state, "coordinator_address", None)
        if hostname is None and interface is None and coordinator:
            hostname = local_address_towards(coordinator)
        return make(distributed_client=distributed_client, hostname=hostname, interface=interface)

    make_gloo.dlrun_wrapped = True  # type: ignore[attr-defined]
    _jax.make_gloo_tcp_collectives = make_gloo
