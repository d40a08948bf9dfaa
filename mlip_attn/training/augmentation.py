"""Rotation augmentation, for models that are not rotation invariant
(``coordinate_embedding: true`` of the graph-free transformer)."""
from __future__ import annotations

from typing import Optional

import torch


def random_rotations(num: int, generator: Optional[torch.Generator] = None,
                     dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``num`` rotation matrices (num, 3, 3), uniform on SO(3) (normalised Gaussian quaternions)."""
    q = torch.randn(num, 4, generator=generator, dtype=torch.float64)
    q = q / torch.linalg.norm(q, dim=1, keepdim=True)
    w, x, y, z = q.unbind(1)
    rot = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
        2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
        2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], dim=1)
    return rot.reshape(num, 3, 3).to(dtype)


def rotate_batch(batch, rotations: torch.Tensor):
    """A copy of a `mlip_attn.data.Batch` with structure b rotated by ``rotations[b]`` (B, 3, 3).

    Rotates positions, cell (rows are lattice vectors), periodic shifts, and the labels forces
    (F → R F) and stress (σ → R σ Rᵀ). Energies, charges, the neighbour list and scalar targets
    are unchanged (distances are).
    """
    import dataclasses
    R = rotations.to(device=batch.positions.device, dtype=batch.positions.dtype)

    def turn(vectors: torch.Tensor, index: torch.Tensor) -> torch.Tensor:  # row vectors: v Rᵀ
        return torch.einsum("nj,nij->ni", vectors, R[index])

    changes = {
        "positions": turn(batch.positions, batch.batch),
        "cell": torch.einsum("bkj,bij->bki", batch.cell, R),
        "shifts": turn(batch.shifts, batch.batch[batch.edge_index[0]]),
    }
    if batch.forces is not None:
        changes["forces"] = turn(batch.forces, batch.batch)
    if batch.stress is not None:
        changes["stress"] = R @ batch.stress @ R.transpose(1, 2)
    return dataclasses.replace(batch, **changes)


def random_rotation(batch, generator: Optional[torch.Generator] = None):
    """Rotation augmentation for models that are not rotation invariant
    (``coordinate_embedding: true``): every structure of the `Batch` gets its own uniformly
    random rotation (see `rotate_batch`). Call it on each training batch before the forward."""
    return rotate_batch(batch, random_rotations(batch.cell.shape[0], generator))
