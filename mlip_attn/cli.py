"""The ``mlip-attn`` command line. Thin: every command calls a library function."""
from __future__ import annotations

import argparse
import sys


def _fit(args, extra):
    from .training import fit, load_config
    path = extra.pop(0) if extra and not extra[0].startswith("--") else None
    config = load_config(path, extra)
    fit(config, resume=args.resume)


def _eval(args, extra):
    from .models import load_model
    from .training.evaluate import evaluate_file
    from .training.run_files import format_errors
    model = load_model(args.model, dtype=args.dtype)
    metrics = evaluate_file(model, args.data, args.batch_size)
    print(f"{args.data}: {int(metrics['structures'])} structures")
    print(format_errors(metrics))


def _demo(args, extra):
    from .apps.demo import run_demo
    run_demo(args.out, quick=args.quick)


def _benchmark(args, extra):
    from .apps.longrange import protocol_of, run_longrange, variant_attention
    from .registry import REFERENCE_SYSTEMS
    systems = REFERENCE_SYSTEMS.names() if args.system == "all" else [args.system]
    for system in systems:
        _, spec = protocol_of(system, args.protocol)
        names = spec.variants if spec.variants is not None else variant_attention()
        unknown = sorted(set(args.variants or []) - set(names))
        if unknown:
            raise ValueError(f"--variants: {unknown[0]!r} is not one of {sorted(names)}")
    for system in systems:
        run_longrange(system, protocol=args.protocol, out=args.out, epochs=args.epochs,
                      width=args.width, n=args.n, variants=args.variants,
                      workers=args.workers, seed=args.seed)


def _study(args, extra):
    from .apps.study import FULL, QUICK, run_study, settings_with
    if bool(args.dataset) == bool(args.data):
        raise ValueError("give either --dataset local|longrange or --data FILE --target NAME")
    classes = {}
    for item in args.class_ or []:
        name, _, count = item.partition(":")
        if not count.isdigit():
            raise ValueError(f"--class {item!r}: expected NAME:N_CLASSES, e.g. polar:2")
        classes[name] = int(count)
    settings = settings_with(QUICK if args.quick else FULL, epochs=args.epochs, width=args.width,
                             seeds=tuple(args.seeds) if args.seeds else None)
    run_study(dataset=args.dataset, data=args.data, targets=args.target,
              classes=classes if args.data else None, out=args.out, quick=args.quick,
              settings=settings, backbones=args.backbones, schemes=args.schemes,
              workers=args.workers)


def _components(args, extra):
    from .registry import BACKBONES, ENCODERS, GLOBAL_BLOCKS, REFERENCE_SYSTEMS
    for registry in (BACKBONES, GLOBAL_BLOCKS, ENCODERS, REFERENCE_SYSTEMS):
        print(f"{registry.kind}s ({registry.package}):")
        for c in registry:
            print(f"  {c.name}: {c.summary}")
            options = ", ".join(f"{k}={v!r}" for k, v in c.defaults().items())
            required = [k for k, p in c.parameters().items() if p.default is p.empty]
            if required or options:
                print(f"      options: {', '.join(required + ([options] if options else []))}")
            if c.presets:
                print(f"      presets: {', '.join(c.presets)}")
        print()


def _analyze(args, extra):
    from pathlib import Path
    if args.what == "physics":  # the model files only; every number to OUT/physics.json
        from .analysis.physics_check import check_files
        return check_files(args.paths, Path(args.out), xtb=args.xtb, physics=args.as_physics)
    if args.what == "domain":   # the training domain into the model file (DomainWarnings)
        from .analysis.domain_calibration import calibrate_domain
        if not 1 <= len(args.paths) <= 2:
            raise ValueError("analyze domain: give a model file, then its training data file "
                             "(or nothing: the model's run folder config.yaml)")
        calibrate_domain(*args.paths, out=args.write_to)
        return
    if args.what == "reach":
        from .analysis.reach import analyze_reach
        if len(args.paths) < 2:
            raise ValueError("analyze reach: give one or more model files, then the data file")
        analyze_reach(args.paths[:-1], args.paths[-1], out=args.out, quantity=args.quantity,
                      max_structures=args.max_structures)
        return
    import ase.io
    from .analysis.attention import learned_exponents, plot_attention_vs_distance, plot_exponents
    from .data import AtomicData
    from .models import load_model
    if len(args.paths) != 2:
        raise ValueError("analyze attention: give a model file and a data file")
    model = load_model(args.paths[0], dtype="float64")
    structures = [AtomicData.from_atoms(a) for a in ase.io.read(args.paths[1], ":")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    plot_attention_vs_distance(model, structures, out / "attention_vs_distance.png")
    print(f"wrote {out / 'attention_vs_distance.png'}")
    if learned_exponents(model):
        plot_exponents(model, out / "exponents.png")
        print(f"wrote {out / 'exponents.png'}")


def _export(args, extra):
    if not args.lammps:
        raise ValueError("choose an export target: --lammps")
    from .lammps.export import default_export_path, export_lammps, read_export_metadata
    out = args.output or default_export_path(args.model, args.route)
    written = export_lammps(args.model, out, args.dtype, args.route, args.device)
    print(f"wrote {written} ({read_export_metadata(written)['route']})  "
          f"(pair_style mlip_attn {out})")


def _build_lammps(args, extra):
    from .lammps.build import build_message, build_plugin, plugin_up_to_date
    reused = not args.force and plugin_up_to_date(args.out)
    so = build_plugin(out_dir=args.out, force=args.force, verbose=args.verbose)
    print(build_message(so, reused=reused))


def _data(args, extra):
    from .apps.longrange import protocol_data
    from .qm import generate
    n, seed, options = protocol_data(args.system, args.protocol, args.held_out, args.n,
                                     args.seed)
    report = generate(args.system, n=n, out=args.out, method=args.method,
                      workers=args.workers, seed=seed, **options)
    print(report)


class _DefaultsHelp(argparse.HelpFormatter):
    """Help that ends each option's text with its default (unless None, off or already said)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is False or "default" in text \
                or action.default == argparse.SUPPRESS:
            return text
        return f"{text} (default: %(default)s)"


def _add_threads(parser) -> None:
    parser.add_argument("--threads", type=int, default=None, help="a fixed number of CPU "
                        "threads for torch (default: chosen per model call: one for small "
                        "structures, else the CPUs this process may use that other jobs do "
                        "not keep busy; see docs/results/performance.md, 'Threads')")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mlip-attn", description="ML interatomic potentials with "
                                "global attention: train, evaluate, benchmark.")
    from . import __version__
    p.add_argument("--version", action="version", version=f"mlip-attn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    defaults = _DefaultsHelp
    f = sub.add_parser("fit", help="train a model from a YAML config", formatter_class=defaults,
                       description="Train a model on labelled structures. config.yaml (optional) "
                       "holds the sections model, data, training and output; keys it leaves out "
                       "take their defaults (without it, give at least --data.train). Writes "
                       "OUTPUT/model.pt (best on validation), checkpoint.pt (every epoch), "
                       "metrics.csv and config.yaml; OUTPUT is runs/model by default.",
                       epilog="Every config key (model.*, data.*, training.*, output) has a "
                       "default and is listed with it in docs/guide/config.md. "
                       "Any key can be overridden on the command line: --training.epochs 50 "
                       "--model.attention null --data.train data/train.xyz")
    f.usage = "mlip-attn fit [config.yaml] [--resume] [--section.key value ...]"
    f.add_argument("--resume", action="store_true", help="continue the run in the output "
                   "directory from its last checkpoint (its model and data sections must match)")
    _add_threads(f)
    f.set_defaults(func=_fit, allow_extra=True)

    e = sub.add_parser("eval", help="errors of a model on a labelled data file",
                       formatter_class=defaults, description="MAE and RMSE of energy, forces "
                       "and stress of a model file on labelled structures.")
    e.add_argument("model", help="model file written by mlip-attn fit (model.pt)")
    e.add_argument("data", help="labelled structures: .xyz/.extxyz (REF_energy, REF_forces), "
                   ".h5 or .db")
    e.add_argument("--batch-size", type=int, default=16, help="structures per model call")
    e.add_argument("--dtype", default=None, choices=["float32", "float64"],
                   help="precision to evaluate in (default: the model file's own)")
    _add_threads(e)
    e.set_defaults(func=_eval)

    d = sub.add_parser("demo", help="generate xTB cumulene data, train, evaluate, run MD")
    d.add_argument("--out", default="demo_run", help="run directory (writes OUT/model.pt)")
    d.add_argument("--quick", action="store_true", help="a smaller demo (about a minute)")
    _add_threads(d)
    d.set_defaults(func=_demo)

    from .cli_bench import add_bench
    add_bench(sub, _add_threads)

    lr = sub.add_parser("benchmark", help="long-range comparison: local vs EFA vs transformer")
    lr.add_argument("suite", choices=["longrange"])
    lr.add_argument("--system", default="cumulene",
                    help="a reference system (see `mlip-attn components`) or 'all'")
    lr.add_argument("--out", default="longrange")
    lr.add_argument("--protocol", default=None, help="the system's protocol (default: its first)")
    lr.add_argument("--epochs", type=int, default=None, help="override the protocol's epochs")
    lr.add_argument("--width", type=int, default=None, help="width of the protocol's reference "
                    "variant (others are matched in parameters)")
    lr.add_argument("--n", type=int, default=None, help="structures (default per system)")
    lr.add_argument("--variants", nargs="+", default=None, help="e.g. local efa (default: all)")
    lr.add_argument("--workers", type=int, default=1)
    lr.add_argument("--seed", type=int, default=0)
    _add_threads(lr)
    lr.set_defaults(func=_benchmark)

    g = sub.add_parser("data", help="generate reference data (xTB / PySCF / analytic toy)",
                       formatter_class=defaults, description="Make structures of a reference "
                       "system and label them (energy, forces) into an extxyz file, one frame "
                       "as soon as it is computed. Re-running the same command resumes; an "
                       "--out that this command did not write is refused and left untouched.")
    g.add_argument("system", help="a reference system: cumulene, sn2, charge-transfer, nacl, "
                   "... (see `mlip-attn components`)")
    g.add_argument("--n", type=int, default=None, help="number of structures (at least 1; "
                   "default 200, or the protocol's / held-out set's)")
    g.add_argument("--out", required=True, help="extxyz file to write or resume")
    g.add_argument("--protocol", default=None, help="make the training data of this "
                   "long-range benchmark protocol of the system (its recipe options and size)")
    g.add_argument("--held-out", default=None, help="with --protocol: make this held-out test "
                   "set of it instead (its options, size and seed), e.g. C12")
    g.add_argument("--method", default=None, choices=["gfn2-xtb", "gfn1-xtb", "pyscf-b3lyp"],
                   help="reference method (default: the system's own, GFN2-xTB for QM systems)")
    g.add_argument("--workers", type=int, default=1, help="labelling processes")
    g.add_argument("--seed", type=int, default=None, help="seed of the structure recipe "
                   "(resume with the same seed; default 0, or the held-out set's)")
    g.set_defaults(func=_data)
    an = sub.add_parser("analyze", help="what a model attends to (attention), how far it sees "
                        "(reach: force-Jacobian sensitivity against distance), its physical "
                        "checks (physics: docs/longrange-physics.md), its training domain "
                        "(domain: recorded in the model file, for the DomainWarning)")
    an.add_argument("what", choices=["attention", "reach", "physics", "domain"])
    an.add_argument("paths", nargs="+", metavar="MODEL... DATA",
                    help="model file(s) (reach, physics: one or more), then the structures "
                    "(extxyz or any ASE-readable file; physics: none)")
    an.add_argument("--out", default="analysis", help="folder for the PNGs (and reach.json)")
    an.add_argument("--quantity", default="auto", choices=["auto", "forces", "energies", "targets"],
                    help="reach: ‖∂F_i/∂r_j‖ (forces), ‖∂E_i/∂r_j‖ (energies) or per-atom target "
                    "contributions (targets); auto = targets for property models, else forces")
    an.add_argument("--max-structures", type=int, default=10, help="reach: structures used")
    an.add_argument("--xtb", action="store_true", help="physics: GFN2-xTB on the same paths")
    an.add_argument("--as-physics", type=int, default=None, help="physics: the files' weights "
                    "under this version's forms (no retraining)")
    an.add_argument("--write-to", default=None, help="domain: write the model file here "
                    "instead of in place (default: in place, the original kept as MODEL.bak)")
    _add_threads(an)
    an.set_defaults(func=_analyze)

    st = sub.add_parser("study", help="the encoder study: S1–S4 (message passing ± encoders ± "
                        "global attention) for PaiNN and EGNN on graph-level properties")
    st.add_argument("--dataset", choices=["local", "longrange"], default=None,
                    help="a built-in GFN2-xTB data set (needs RDKit: the 'study' extra)")
    st.add_argument("--data", default=None, help="your own extxyz with targets in atoms.info")
    st.add_argument("--target", nargs="+", default=None, help="regression targets "
                    "(atoms.info keys; default for --dataset: its own)")
    st.add_argument("--class", dest="class_", nargs="+", default=None,
                    help="class labels as NAME:N_CLASSES (with --data)")
    st.add_argument("--out", default="study_run")
    st.add_argument("--quick", action="store_true", help="smaller data and models, 6 epochs: "
                    "minutes")
    st.add_argument("--epochs", type=int, default=None)
    st.add_argument("--width", type=int, default=None)
    st.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    st.add_argument("--backbones", nargs="+", default=["painn", "egnn"])
    st.add_argument("--schemes", nargs="+", default=["S1", "S2", "S3", "S4"])
    st.add_argument("--workers", type=int, default=1, help="xTB labelling processes")
    st.set_defaults(func=_study)

    c = sub.add_parser("components", help="list the registered backbones, global blocks and "
                       "reference systems with their options")
    c.set_defaults(func=_components)

    x = sub.add_parser("export", help="export a model file for LAMMPS (pair_style mlip_attn)")
    x.add_argument("model")
    x.add_argument("--lammps", action="store_true", help="a model file for pair_style mlip_attn")
    x.add_argument("-o", "--output", default=None)
    x.add_argument("--dtype", default="float64", choices=["float64", "float32"])
    x.add_argument("--route", default="auto", choices=["auto", "aoti", "torchscript+ops",
                   "torchscript"], help="aoti: an AOTInductor .pt2 package (compiles for "
                   "minutes); auto: TorchScript with the compiled ops, else plain TorchScript")
    x.add_argument("--device", default="cpu", help="--route aoti: compile for cpu or cuda[:N]")
    x.set_defaults(func=_export)

    bl = sub.add_parser("build-lammps", help="compile the LAMMPS plugin for the installed "
                        "lammps and torch")
    bl.add_argument("--force", action="store_true")
    bl.add_argument("--verbose", action="store_true")
    bl.add_argument("--out", default=None, help="folder (default: ~/.cache/mlip_attn/lammps/...)")
    bl.set_defaults(func=_build_lammps)

    from .cli_openqdc import add_import_openqdc
    add_import_openqdc(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and not getattr(args, "allow_extra", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    from .lammps.build import PluginBuildError
    from .training import FitError
    try:
        if hasattr(args, "threads"):   # commands that compute: the process-wide thread policy
            from .threads import configure
            configure(args.threads)
        args.func(args, extra)
    except (ValueError, FitError, PluginBuildError) as exc:  # ConfigError, DataFileError, ...
        print(f"mlip-attn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last completed epoch is in the checkpoint (use --resume)",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
