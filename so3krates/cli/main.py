"""The ``so3krates`` command: one entry point, one module per subcommand (parsing only)."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from so3krates import __version__, runtime
from so3krates.files import error_message

EXIT_BAD_INPUT = 2  # bad input, an unwritable output, a refused overwrite: a message, never a traceback
EXIT_INTERRUPTED = 130  # Ctrl-C, as a shell reports a process ended by SIGINT

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
        with warnings.catch_warnings():  # the package's own warnings as one line each, as its errors are
            warnings.showwarning = _warning_printer(args.command, warnings.showwarning)
            return int(args._run(args) or 0)
    except KeyboardInterrupt:  # Ctrl-C: what was written so far stays; the shell learns it was cut short
        print(f"so3krates {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ValueError, OSError, KeyError) as err:
        # Users get the message, not a traceback from deep inside JAX.
        print(f"so3krates {args.command}: error: {error_message(err)}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _warning_printer(command: str, default):  # noqa: ANN001, ANN202 - warnings.showwarning's signature
    """``so3krates CMD: warning: ...`` for warnings the package defines (e.g. ``UnitsWarning``); Python's
    display, which shows the source line that warned, for any other."""

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001, ANN202
        if not category.__module__.startswith("so3krates"):
            return default(message, category, filename, lineno, file, line)
        print(f"so3krates {command}: warning: {message}", file=file or sys.stderr)
        return None

    return show


def console_main() -> int:
    """The installed ``so3krates`` command: the package's process tuning (:func:`so3krates.runtime.configure`:
    a restart with huge pages, XLA's CPU buffers kept for reuse), then :func:`main`."""
    runtime.configure(restart_argv=["-m", "so3krates.cli.main", *sys.argv[1:]])
    return main()


if __name__ == "__main__":
    sys.exit(console_main())
