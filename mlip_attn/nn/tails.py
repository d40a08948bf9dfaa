"""Physical tails between charged fragments: what a model's energy follows beyond its reach.

Between two bonded fragments f and g (`mlip_attn.nn.charges`) with integer charges Q_f, Q_g
(e), centroids R_f, R_g (Å) and polarisabilities α_f = Σ_{i ∈ f} α_{Z_i} (Å³, learned per
element, positive), at distance R = |R_f − R_g|:

    E_fg(R) = (1 − S(R)) · k_e [ Q_f Q_g / R − (α_g Q_f² + α_f Q_g²) / (2 R⁴) ]

Coulomb between the fragment charges plus the dipole each charge induces in the other fragment
(k_e = 14.3996 eV·Å/e²), switched on by 1 − S with S the model's reach switch (C², 1 below
separation/2, 0 beyond the separation, `mlip_attn.nn.switching.reach_switch`): inside the reach
the learned blocks describe the interaction, beyond it this form does, so a charged fragment
beside a neutral one gives E(A, q) + E(B, 0) − α_B k_e q² / (2R⁴) and two neutral fragments
E(A) + E(B) exactly. Each pair's energy is shared equally between the atoms of the two
fragments (per-atom energies still sum to the total).

Cannot: permanent dipoles of neutral fragments (charge–dipole, dipole–dipole) and dispersion
(1/R⁶) are not in it; the monopole sits at the centroid, not the charge centre.
"""
from typing import List

import torch
from torch import Tensor

from .switching import reach_switch

COULOMB = 14.399645  # k_e, eV·Å/e²


def fragment_tail_energies(positions: Tensor, batch: Tensor, labels: Tensor, q_f: Tensor,
                           alpha: Tensor, separation: float, coulomb: float = COULOMB) -> Tensor:
    """Per-atom tail energies (N,) eV (module docstring). positions (N, 3) Å, batch (N,),
    labels (N,) fragment labels (`mlip_attn.nn.charges.fragment_labels`), q_f (N,) the charge
    of each atom's fragment (e), alpha (N,) per-atom polarisabilities (Å³), separation (Å)."""
    n = positions.shape[0]
    dtype = positions.dtype
    roots = torch.nonzero(labels == torch.arange(n, device=labels.device)).squeeze(1)  # (F,)
    index = torch.full((n,), -1, dtype=torch.long, device=labels.device)
    index[roots] = torch.arange(roots.shape[0], device=labels.device)
    frag = index[labels]                                                   # (N,) in 0..F−1
    f = roots.shape[0]
    size = torch.zeros(f, dtype=dtype, device=positions.device).index_add(
        0, frag, torch.ones_like(alpha))
    centroid = torch.zeros((f, 3), dtype=dtype, device=positions.device).index_add(
        0, frag, positions) / size[:, None]
    a_f = torch.zeros(f, dtype=dtype, device=positions.device).index_add(0, frag, alpha)
    q = q_f[roots]
    same = batch[roots][:, None] == batch[roots][None, :]
    eye = torch.eye(f, dtype=torch.bool, device=positions.device)
    pair = same & ~eye
    diff = centroid[:, None, :] - centroid[None, :, :]
    r2 = (diff * diff).sum(-1)
    r = torch.sqrt(torch.where(pair, r2, torch.ones_like(r2)))
    energy = coulomb * (q[:, None] * q[None, :] / r
                        - (a_f[None, :] * q[:, None] ** 2 + a_f[:, None] * q[None, :] ** 2)
                        / (2.0 * r ** 4))
    energy = torch.where(pair, energy * (1.0 - reach_switch(r, separation)),
                         torch.zeros_like(energy))
    per_fragment = 0.5 * energy.sum(dim=1)        # half of each pair to each fragment
    return per_fragment[frag] / size[frag]


__all__: List[str] = ["fragment_tail_energies", "COULOMB"]
