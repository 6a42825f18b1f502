"""The ``so3krates`` command: one entry point, one module per subcommand (parsing only)."""

from __future__ import annotations

import argparse
import importlib
import sys

from so3krates import __version__, runtime

# subcommand name -> module in so3krates.cli that defines ``add_arguments(parser)`` and ``run(args)``.
SUBCOMMANDS = {
    "train": ("train", "train a force field on reference data"),
    "evaluate": ("evaluate", "error figures of a trained model on data"),
    "md": ("md", "molecular dynamics with a trained model"),
    "relax": ("relax", "geometry optimisation with a trained model"),
    "generate": ("generate", "reference data with GFN2-xTB (tblite)"),
    "prepare": ("prepare", "convert data to the on-disk streaming format"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="so3krates",
        description="So3krates machine-learned force fields: train, evaluate, run MD and relax.",
    )
    parser.add_argument("--version", action="version", version=f"so3krates {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(f"so3krates.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"so3krates.cli.{module_name}":
                raise
            continue  # subcommand not built yet
        p = sub.add_parser(name, help=help_text, description=module.__doc__)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError, KeyError) as err:
        # Users get the message, not a traceback from deep inside JAX.
        print(f"so3krates {args.command}: error: {err}", file=sys.stderr)
        return 2


def console_main() -> int:
    """The installed ``so3krates`` command: the package's process tuning (:func:`so3krates.runtime.configure`:
    a restart with huge pages, XLA's CPU buffers kept for reuse), then :func:`main`."""
    runtime.configure(restart_argv=["-m", "so3krates.cli.main", *sys.argv[1:]])
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
