"""Data parallelism with jax.jit over a 1-D Mesh: batch split on 'data', state replicated."""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"


def maybe_initialize_distributed() -> None:
    """Call jax.distributed.initialize() when launched multi-host (e.g. a TPU pod slice).

    Triggered by FOSC_JAX_MULTIHOST=1 or the standard coordinator variables; a no-op on a
    single machine.
    """
    wanted = os.environ.get("FOSC_JAX_MULTIHOST") == "1" or "JAX_COORDINATOR_ADDRESS" in os.environ
    if wanted and not jax.distributed.is_initialized():
        jax.distributed.initialize()


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
    """Place every leaf of ``tree`` on all devices of ``mesh``."""
    return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Split every leaf's leading axis over the mesh (it must divide by the device count)."""
    return jax.device_put(tree, batch_sharded(mesh))


def constrain_batch(tree: Any, mesh: Mesh) -> Any:
    """Inside jit: ask for the batch axis to be split over 'data'."""
    return jax.lax.with_sharding_constraint(tree, batch_sharded(mesh))
