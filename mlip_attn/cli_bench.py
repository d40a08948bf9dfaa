"""``mlip-attn bench``: its options and what it runs (kept out of cli.py)."""
from __future__ import annotations


def _bench(args, extra):
    large = args.sizes if args.sizes != [100, 1000, 10000] else (1000, 10000)  # default: large
    from .apps.bench import BENCH_MODES, check_mode_device
    check_mode_device(args.device, [m for m in BENCH_MODES if getattr(args, m)])
    if args.roofline:
        from .apps.roofline import run_roofline
        run_roofline(sizes=large, width=args.width, layers=args.layers, cutoff=args.cutoff)
        return
    if args.under_load:
        from .apps.load_bench import run_load_bench
        run_load_bench(competing=args.competing)
        return
    if args.lammps:
        from .apps.lammps_bench import run_lammps_bench
        from .apps.lammps_bench_electrostatics import run_electrostatics_bench
        if not args.electrostatics:
            run_lammps_bench(sizes=large, steps=args.steps, threads=args.threads)
            print()
        run_electrostatics_bench(steps=min(args.steps, 3), time_limit=args.time_limit)
        return
    if args.training:
        from .apps.bench import run_training_bench
        run_training_bench(models=args.models, width=args.width, layers=args.layers,
                           cutoff=args.cutoff, structures=args.structures)
        return
    if args.peers:
        from .apps.peers import DEFAULT_MODELS, run_peers
        run_peers(sizes=args.sizes, models=args.peer_models or DEFAULT_MODELS,
                  repeats=args.repeats if args.repeats != 5 else 7, width=args.width,
                  layers=args.layers, cutoff=args.cutoff, quick=args.quick)
        return
    from .apps.bench import run_bench, write_bench_json
    rows = run_bench(sizes=args.sizes, models=args.models, repeats=args.repeats,
                     width=args.width, layers=args.layers, cutoff=args.cutoff,
                     device=args.device, time_cap=args.time_cap,
                     neighbour_list=not args.no_neighbour_list)
    if args.json:
        write_bench_json(args.json, rows, device=args.device, width=args.width,
                         layers=args.layers, cutoff=args.cutoff, repeats=args.repeats)


def add_bench(sub, add_threads) -> None:
    """Register the ``bench`` subcommand on ``sub`` (argparse subparsers); ``add_threads``
    adds the shared ``--threads`` option."""
    b = sub.add_parser("bench", help="throughput and peak memory of the models")
    b.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    b.add_argument("--models", nargs="+", default=["painn", "egnn"],
                   help="<backbone> or <backbone>+<attention preset>, optionally @<encoders> "
                   "(comma-separated or 'all'), e.g. painn egnn painn+efa-l1 painn+transformer "
                   "painn@all (see `mlip-attn components`)")
    b.add_argument("--repeats", type=int, default=5)
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (plain bench only)")
    b.add_argument("--time-cap", type=float, default=None, help="seconds per point (plain "
                   "bench): a point is ended after it, larger sizes skipped when predicted over it")
    b.add_argument("--no-neighbour-list", action="store_true", help="plain bench: no "
                   "neighbour-list rows")
    b.add_argument("--json", default=None, help="also write the plain bench's rows, with the "
                   "device, torch and Triton versions, to this JSON file")
    b.add_argument("--width", type=int, default=128)
    b.add_argument("--layers", type=int, default=3)
    b.add_argument("--cutoff", type=float, default=5.0)
    b.add_argument("--lammps", action="store_true", help="ms/step in LAMMPS vs ASE vs the bare "
                   "model call (PaiNN on fcc Cu, 1,000 and 10,000 atoms) and strong scaling "
                   "over MPI ranks (local and EFA)")
    b.add_argument("--steps", type=int, default=10, help="timed MD steps per point (--lammps)")
    b.add_argument("--electrostatics", action="store_true", help="with --lammps: only the "
                   "electrostatics tables (ASE cost ratio at 10³/10⁴ ions, LAMMPS strong "
                   "scaling local vs electrostatics at 10⁴/10⁵ on 1 and 2 ranks)")
    b.add_argument("--time-limit", type=float, default=30.0, help="with --lammps: skip an "
                   "electrostatics size whose estimated s per MD step exceeds this")
    b.add_argument("--peers", action="store_true", help="side by side in one process, "
                   "interleaved, with SchNetPack (PaiNN, SchNet), TensorNet, NequIP, Allegro and "
                   "MACE at matched sizes, by order ℓ (docs/results/performance.md says how to install them)")
    b.add_argument("--peer-models", nargs="+", default=None, help="with --peers: the rows to "
                   "run, e.g. painn tensornet mace-l1 (default: all rows of docs/results/performance.md)")
    b.add_argument("--quick", action="store_true", help="with --peers: check that every "
                   "model builds and runs (40 atoms, width 16, 2 layers, one call each, no "
                   "memory runs; about a minute), not the benchmark")
    b.add_argument("--training", action="store_true", help="training throughput "
                   "(structures/s) and peak memory of energy + force training steps")
    b.add_argument("--structures", default="clusters", choices=["clusters", "cumulene"],
                   help="with --training: 30-atom random clusters, or C9H4 cumulenes")
    b.add_argument("--roofline", action="store_true", help="our PaiNN against this machine's "
                   "arithmetic limit: matmul peak, counted FLOPs of energy + forces, achieved "
                   "GFLOP/s, time by kind of operation (1,000 and 10,000 atoms)")
    b.add_argument("--under-load", action="store_true", help="MD steps (C12H4, 1,000 "
                   "atoms) and a fit epoch under each thread policy (before, passive, 1 "
                   "thread, default), each in a fresh process, with and without busy jobs")
    b.add_argument("--competing", type=int, nargs="+", default=[0, 1], help="with "
                   "--under-load: numbers of busy-loop jobs (pinned to CPUs 0, 1, ...) to run "
                   "beside")
    add_threads(b)
    b.set_defaults(func=_bench)
