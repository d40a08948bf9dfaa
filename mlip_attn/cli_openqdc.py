"""``mlip-attn import-openqdc``: its options and what it runs (kept out of cli.py)."""
from __future__ import annotations


def _import_openqdc(args, extra):
    """Convert, then print the structure count and what was written."""
    from .data.openqdc import openqdc_summary, openqdc_to_file
    options = dict(energy_method=args.energy_method, force_method=args.force_method,
                   read_forces=not args.no_forces, energy_type=args.energy_type,
                   energy_unit=args.energy_unit, distance_unit=args.distance_unit,
                   force_unit=args.force_unit, dataset=args.dataset,
                   energy_dtype=args.energy_dtype, max_structures=args.max_structures,
                   forces_are_gradients=True if args.forces_are_gradients else None)
    n = openqdc_to_file(args.path, args.out, overwrite=args.overwrite, **options)
    print(f"wrote {n} structures to {args.out}")
    print(openqdc_summary(args.path, **options))


def add_import_openqdc(sub) -> None:
    """Register the ``import-openqdc`` subcommand on ``sub`` (argparse subparsers)."""
    o = sub.add_parser("import-openqdc", help="convert a data set openQDC preprocessed on disk")
    o.add_argument("path", help="<openqdc cache>/<dataset name>, its preprocessed/ folder, or "
                   "a nested one such as <cache>/ani/preprocessed/ani1x")
    o.add_argument("--out", required=True, help=".xyz or .h5 file to write (missing folders "
                   "are created; an existing file is refused unless --overwrite)")
    o.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    o.add_argument("--energy-method", default="0",
                   help="energy method: its name (e.g. 'wb97x/6-31g*') or its column index")
    o.add_argument("--force-method", default=None,
                   help="forces: for a known dataset the energy method's own forces are taken "
                   "and this may only confirm them (name or forces.mmap column); for an "
                   "unknown one, the forces.mmap column")
    o.add_argument("--no-forces", action="store_true", help="write no forces")
    o.add_argument("--energy-type", choices=("total", "formation"), default="total",
                   help="total: the stored energies; formation: minus openQDC's isolated-atom "
                   "energies of the method (openQDC's default)")
    o.add_argument("--dataset", default=None,
                   help="openQDC dataset name, if the folder was renamed (default: its name)")
    o.add_argument("--max-structures", type=int, default=None)
    o.add_argument("--energy-dtype", choices=("float32", "float64"), default=None,
                   help="energies.mmap dtype (unknown datasets; guessed if omitted)")
    o.add_argument("--energy-unit", default=None,
                   help="unknown datasets only: e.g. hartree, ev, kcal/mol")
    o.add_argument("--distance-unit", default=None, help="unknown datasets only: ang, bohr, nm")
    o.add_argument("--force-unit", default=None,
                   help="unknown datasets only: e.g. hartree/bohr, ev/ang")
    o.add_argument("--forces-are-gradients", action="store_true",
                   help="unknown datasets only: forces.mmap holds dE/dR (negate it)")
    o.set_defaults(func=_import_openqdc)
