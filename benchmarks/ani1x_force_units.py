"""Which unit are ANI-1x's stored forces in? Recompute one conformer and compare.

openQDC's ANI1X class declares forces in hartree/Å and multiplies them by 0.529177249 on load
("correct the Dataset error"), i.e. it treats the stored numbers as 1/0.529 = 1.8897 times too
large. This script settles it by physics: it recomputes the ωB97x/6-31G(d) energy and forces of
one ANI-1x conformer with PySCF (the ANI-1x level of theory, Gaussian's Cartesian 6D basis) and
compares them with the numbers stored in the ANI-1x release.

The conformer (``C1H4N4O4``, first conformation, ``wb97x_dz.energy`` / ``wb97x_dz.forces``) is
copied from the ANI-1x release as excerpted in choderalab/modelforge's test data
(``modelforge/tests/data/ani1_n5.hdf5``).

Run (PySCF is not a dependency of mlip-attn; use any environment that has it)::

    python -m venv /tmp/venv-pyscf && /tmp/venv-pyscf/bin/pip install pyscf
    OMP_NUM_THREADS=1 /tmp/venv-pyscf/bin/python benchmarks/ani1x_force_units.py

It prints the energy difference and the least-squares ratio stored / recomputed forces for the
two readings: 1.000 means the stored numbers are hartree/Å (then openQDC's factor is wrong),
0.529 means they are hartree/bohr.

The same check on your own import (``mlip-attn import-openqdc <cache>/ani/preprocessed/ani1x
--energy-method wb97x/6-31g* --out ani1x.xyz``), frames 0 and 5::

    python benchmarks/ani1x_force_units.py --extxyz ani1x.xyz --frames 0,5

compares the imported ``REF_forces`` (eV/Å) with the recomputed ones; a ratio of 1.000 means the
import is right, 0.529 is what openQDC's own reader would give.

Measured (2-core CPU, PySCF 2.14, grid level 4) on the release conformer:

    energy: stored -559.96732665 Ha, PySCF -559.96737703 Ha, difference -0.032 kcal/mol
    stored forces read as hartree/Å   : least-squares stored/recomputed = 1.0003, RMS difference 4.57e-05 hartree/Å
    stored forces read as hartree/bohr: least-squares stored/recomputed = 1.8903, RMS difference 2.21e-02 hartree/bohr
"""
import numpy as np

NUMBERS = [6, 1, 1, 1, 1, 7, 7, 7, 7, 8, 8, 8, 8]
POSITIONS_ANG = [
    [1.0234026, 0.82911, 0.1028303], [-1.300884, 0.3831982, 1.3651426],
    [-3.184876, -1.2480949, -0.6486961], [0.1708904, -0.2244574, 1.6787908],
    [2.1853921, 0.6403561, -1.6791393], [0.7845485, -0.2582563, 0.926529],
    [1.346796, -1.388733, 0.4630862], [1.9548454, -1.1122795, -0.6175888],
    [1.7804027, 0.209148, -0.8599248], [-1.1696881, -0.2268189, 0.548168],
    [-1.9126405, 0.1927124, -0.5437298], [-3.2172801, -0.2891267, -0.3054241],
    [0.6649727, 1.9888812, 0.2112619]]
STORED_ENERGY_HA = -559.9673266512569
STORED_FORCES = [
    [0.01657831, 0.00208556, 0.00961986], [-0.03721527, -0.0103774, -0.08432362],
    [0.00524313, 0.06732982, 0.02280491], [0.00821256, -0.02387543, 0.06603277],
    [-0.00206462, -0.00357482, 0.00431916], [0.20106082, 0.01689906, -0.02965967],
    [-0.00325114, 0.00842358, 0.00410941], [-0.00429628, -0.00360803, 0.00523179],
    [0.00421975, 0.00448409, -0.00442295], [-0.13058083, 0.01246929, 0.01397585],
    [-0.04244819, 0.00138314, 0.02921354], [-0.01240513, -0.05592296, -0.03804544],
    [-0.00305312, -0.0157159, 0.00114439]]
BOHR_TO_ANGSTROM = 0.52917721092


HARTREE_TO_EV = 27.211386246


def wb97x_631gd(numbers, positions_ang):
    """ωB97x/6-31G(d) (Cartesian d, as Gaussian) energy (hartree) and forces (hartree/bohr)."""
    from pyscf import dft, gto
    mol = gto.M(atom=[(int(z), tuple(p)) for z, p in zip(numbers, positions_ang)],
                unit="Angstrom", basis="6-31g*", cart=True, charge=0, spin=0, verbose=0)
    mf = dft.RKS(mol)
    mf.xc = "wb97x"
    mf.grids.level = 4
    mf.conv_tol = 1e-10
    energy = mf.kernel()
    return energy, -mf.nuc_grad_method().kernel()


def check_import(path, frames):
    """Imported REF_forces (eV/Å) against recomputed forces, frame by frame."""
    import ase.io
    for i in frames:
        atoms = ase.io.read(path, index=i)
        _, forces_ha_bohr = wb97x_631gd(atoms.numbers, atoms.positions)
        ref = forces_ha_bohr / BOHR_TO_ANGSTROM * HARTREE_TO_EV
        stored = atoms.arrays["REF_forces"]
        ratio = float((stored * ref).sum() / (ref * ref).sum())
        print(f"frame {i}: imported/recomputed forces = {ratio:.4f} "
              f"(RMS difference {np.sqrt(((stored - ref) ** 2).mean()):.2e} eV/Å)")


def main():
    import argparse
    p = argparse.ArgumentParser(description="ANI-1x force units by recomputation")
    p.add_argument("--extxyz", default=None, help="an imported ANI-1x file to check instead")
    p.add_argument("--frames", default="0", help="comma-separated frame indices (--extxyz)")
    args = p.parse_args()
    if args.extxyz:
        check_import(args.extxyz, [int(i) for i in args.frames.split(",")])
        return
    energy, forces_ha_bohr = wb97x_631gd(NUMBERS, POSITIONS_ANG)
    forces_ha_ang = forces_ha_bohr / BOHR_TO_ANGSTROM
    stored = np.asarray(STORED_FORCES)
    print(f"energy: stored {STORED_ENERGY_HA:.8f} Ha, PySCF {energy:.8f} Ha, "
          f"difference {(energy - STORED_ENERGY_HA) * 627.509:.3f} kcal/mol")
    for unit, ref in (("hartree/Å", forces_ha_ang), ("hartree/bohr", forces_ha_bohr)):
        ratio = float((stored * ref).sum() / (ref * ref).sum())
        rms = float(np.sqrt(((stored - ref) ** 2).mean()))
        print(f"stored forces read as {unit:12s}: least-squares stored/recomputed = "
              f"{ratio:.4f}, RMS difference {rms:.2e} {unit}")


if __name__ == "__main__":
    main()
