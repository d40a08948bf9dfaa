"""Shared by the MD examples: the local and attention model files to compare, and the folder
their plots go to (``md_examples/output/`` unless ``--out DIR``)."""
from __future__ import annotations

from pathlib import Path

POTENTIALS = Path(__file__).resolve().parents[1] / "potentials"
OUTPUT = Path(__file__).resolve().parent / "output"


def add_model_arguments(parser, system: str) -> None:
    parser.add_argument("--local", help=f"local model file (default potentials/{system}-local.pt)")
    parser.add_argument("--efa", help=f"attention model file (default potentials/{system}-efa.pt)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the "
                        "package's policy, see the docs' performance page; 1 is fastest on a "
                        "busy machine)")
    parser.add_argument("--out", type=Path, default=OUTPUT, help="folder for the plot "
                        "(default md_examples/output/)")


def output_file(args, name: str) -> Path:
    """``args.out / name``, the folder created."""
    args.out.mkdir(parents=True, exist_ok=True)
    return args.out / name


def model_paths(args, system: str) -> dict[str, Path]:
    """{"local": path, "efa": path}; exits with a clear message when a file is missing. Also
    applies ``--threads`` (`mlip_attn.threads.configure`)."""
    from mlip_attn.threads import configure
    configure(args.threads)
    paths = {"local": Path(args.local or POTENTIALS / f"{system}-local.pt"),
             "efa": Path(args.efa or POTENTIALS / f"{system}-efa.pt")}
    for name, path in paths.items():
        if not path.exists():
            raise SystemExit(f"{path}: no such model file; train one with `mlip-attn benchmark "
                             f"longrange --system {system}` and pass it with --{name}")
    return paths
