"""Data parallelism with jax.jit over a 1-D Mesh: batch split on 'data', state replicated."""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


COORDINATOR_ENV = "FOSC_JAX_COORDINATOR"      # host:port of process 0, e.g. 127.0.0.1:12355
NUM_PROCESSES_ENV = "FOSC_JAX_NUM_PROCESSES"  # total processes, e.g. 2
PROCESS_ID_ENV = "FOSC_JAX_PROCESS_ID"        # this process, 0 .. NUM_PROCESSES-1


def distributed_args(environ=os.environ) -> Optional[dict]:
    """jax.distributed.initialize keyword arguments from the environment, or None.

    FOSC_JAX_COORDINATOR (or JAX's own JAX_COORDINATOR_ADDRESS), FOSC_JAX_NUM_PROCESSES and
    FOSC_JAX_PROCESS_ID give them explicitly (all three, e.g. two processes on one machine);
    FOSC_JAX_MULTIHOST=1 alone lets JAX detect the cluster (TPU pod slices, SLURM, ...).
    """
    coordinator = environ.get(COORDINATOR_ENV) or environ.get("JAX_COORDINATOR_ADDRESS")
    num, pid = environ.get(NUM_PROCESSES_ENV), environ.get(PROCESS_ID_ENV)
    if coordinator is None and num is None and pid is None:
        return {} if environ.get("FOSC_JAX_MULTIHOST") == "1" else None
    from fosc_jax.errors import UserError
    if coordinator is None or num is None or pid is None:
        raise UserError(f"multi-process launch: set all of {COORDINATOR_ENV} (host:port), "
                        f"{NUM_PROCESSES_ENV} and {PROCESS_ID_ENV}; got coordinator="
                        f"{coordinator!r}, num_processes={num!r}, process_id={pid!r}.")
    try:
        num_i, pid_i = int(num), int(pid)
    except ValueError:
        num_i = pid_i = -1
    if not (num_i >= 1 and 0 <= pid_i < num_i):
        raise UserError(f"multi-process launch: {NUM_PROCESSES_ENV}={num!r} and "
                        f"{PROCESS_ID_ENV}={pid!r} must be integers with 0 <= id < count.")
    return {"coordinator_address": coordinator, "num_processes": num_i, "process_id": pid_i}


def maybe_initialize_distributed() -> None:
    """Call jax.distributed.initialize() when launched as several processes (see
    :func:`distributed_args`); a no-op for a single process."""
    kwargs = distributed_args()
    if kwargs is not None and not jax.distributed.is_initialized():
        jax.distributed.initialize(**kwargs)


def check_same_launch(config_json: str, workdir: str) -> None:
    """Every process of a multi-process launch must train the same config in the same
    workdir: compare SHA-256 digests of both with process 0's (one small all-gather, the
    first collective of a run, so a mismatch fails at once instead of hanging in a later
    one); UserError naming the processes that differ. A no-op for a single process."""
    if jax.process_count() == 1:
        return
    import hashlib
    from jax.experimental import multihost_utils
    from fosc_jax.errors import UserError
    mine = np.frombuffer(hashlib.sha256(config_json.encode()).digest()
                         + hashlib.sha256(os.path.normpath(workdir).encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), 64)
    for what, cols in (("config", slice(0, 32)), ("workdir", slice(32, 64))):
        odd = [i for i in range(len(every)) if (every[i, cols] != every[0, cols]).any()]
        if odd:
            raise UserError(f"multi-process launch: process(es) {odd} got another {what} than "
                            f"process 0 (this is process {jax.process_index()}); start every "
                            "process with the same --config, overrides and --workdir.")


def is_primary() -> bool:
    """True on the process that writes files (process 0; the only one when single-process)."""
    return jax.process_index() == 0


def any_process(flag: bool) -> bool:
    """``flag`` OR-ed over processes (collective when multi-process: every process calls it)."""
    if jax.process_count() == 1:
        return bool(flag)
    from jax.experimental import multihost_utils
    return bool(np.any(multihost_utils.process_allgather(np.asarray(bool(flag)))))


def to_host(tree: Any) -> Any:
    """Every leaf as a numpy array of its global value. Arrays spanning other processes are
    gathered (collective: every process must call this with the same tree)."""
    leaves = jax.tree_util.tree_leaves(tree)
    if all(not isinstance(a, jax.Array) or a.is_fully_addressable or a.is_fully_replicated
           for a in leaves):
        return jax.tree_util.tree_map(_local_value, tree)
    from jax.experimental import multihost_utils
    return jax.tree_util.tree_map(np.asarray,
                                  multihost_utils.process_allgather(tree, tiled=True))


def _local_value(a: Any) -> np.ndarray:
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return np.asarray(a.addressable_data(0))  # fully replicated: any shard is the value
    return np.asarray(a)


def make_mesh(num_devices: Optional[int] = None) -> Mesh:
    """A 1-D mesh over the first ``num_devices`` devices (default: all) named 'data'."""
    devices = jax.devices()
    if num_devices is not None:
        if num_devices > len(devices):
            raise ValueError(f"asked for {num_devices} devices, only {len(devices)} exist.")
        devices = devices[:num_devices]
    return Mesh(np.array(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over 'data'."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of ``tree`` on all devices of ``mesh`` (whose devices may belong to
    several processes; each process then passes the same value)."""
    sharding = replicated(mesh)
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda a: _global_array(a, sharding), tree)


def _global_array(a: Any, sharding: NamedSharding) -> Any:
    if isinstance(a, jax.core.Tracer):
        return jax.lax.with_sharding_constraint(a, sharding)
    if isinstance(a, jax.Array) and a.sharding == sharding:
        return a
    host = _local_value(a)
    return jax.make_array_from_callback(host.shape, sharding, lambda idx: host[idx])


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Split every leaf's leading axis over the mesh (it must divide by the device count)."""
    return jax.device_put(tree, batch_sharded(mesh))


def constrain_batch(tree: Any, mesh: Mesh) -> Any:
    """Inside jit: ask for the batch axis to be split over 'data'."""
    return jax.lax.with_sharding_constraint(tree, batch_sharded(mesh))
