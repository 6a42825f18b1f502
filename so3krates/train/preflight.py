"""The run directory before any data is read: what ``--out`` may hold, whether a run can be resumed,
and whether every file the run writes can be written there.

* A new run goes into a missing or empty directory. A directory holding a run (``config.yaml``,
  ``model.safetensors`` or a checkpoint) is refused ("use --resume"), and so is one holding files of
  anything else (they would be mixed with the run's). ``overwrite`` (``--overwrite``) allows both: the
  previous run's own files (:data:`RUN_FILES`, its TensorBoard events) are removed before training
  starts, every other file is left alone.
* A resumed run needs its checkpoint whenever it has completed an epoch: without it (missing,
  truncated, garbled, or a checksum that differs) ``--resume`` would start over and replace the
  finished model, so it is refused, naming the file and the ways out.
* The folder is probed with a 64 KiB file (:func:`so3krates.files.check_writable_dir`) and no path the
  run writes may be taken by a folder: a full disk or a read-only folder is found before the neighbour
  lists and the compilation, not after hours of training.
"""

from __future__ import annotations

import json
from pathlib import Path

from so3krates import run_dir as rd
from so3krates.files import check_writable_dir, error_message
from so3krates.train.checkpoint import CHECKPOINT_FILE, checkpoint_epoch
from so3krates.train.records import CURVE_FILE, METRICS_FILE, TENSORBOARD_DIR

# The files a training run writes into its directory (and only these are replaced by --overwrite).
RUN_FILES = (rd.CONFIG_FILE, rd.WEIGHTS_FILE, rd.METADATA_FILE, rd.SPLIT_FILE, CHECKPOINT_FILE, METRICS_FILE)
RUN_FILES += (CURVE_FILE,)
RUN_MARKERS = (rd.CONFIG_FILE, rd.WEIGHTS_FILE, CHECKPOINT_FILE)  # any of them: the folder holds a run
WAYS_OUT = "to start this run over pass --overwrite (without --resume); to keep it, train into another --out"


def _temporary(name: str) -> bool:
    """A temporary file of an atomic write of a run file (left behind by a killed process)."""
    return name.endswith(".tmp") and any(name.startswith(f".{f}.") for f in RUN_FILES)


def _started_run(run_dir: Path) -> bool:
    """A metadata.json that this package wrote: a run killed in its start-up, before config.yaml."""
    try:
        meta = json.loads((run_dir / rd.METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "so3krates_version" in meta and "format_version" in meta


def _own(name: str, started: bool) -> bool:
    """A file a new run may replace without --overwrite, in a folder with no run marker: temporary files of
    killed writes and, after a start-up that was killed, its metadata and split; a user's own metrics.csv,
    curve or TensorBoard folder are not (they need --overwrite)."""
    return _temporary(name) or (started and name in (rd.METADATA_FILE, rd.SPLIT_FILE))


def check_output(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """Refuse an ``--out`` that a new run would mix into or overwrite unasked, or a run that cannot be
    resumed; probe that every file of the run can be written. Changes nothing but the probe (and
    creating the folder)."""
    if resume and overwrite:
        raise ValueError("--overwrite starts a new run in --out; it cannot be combined with --resume")
    if run_dir.exists() and not run_dir.is_dir():
        raise ValueError(f"--out {run_dir}: is a file, not a directory")
    if resume:
        _check_resumable(run_dir)
    elif run_dir.is_dir() and not overwrite:
        _check_new(run_dir)
    check_writable_dir(run_dir, "--out")
    for name in RUN_FILES:
        if (run_dir / name).is_dir():
            raise ValueError(f"--out {run_dir}: {name} is a directory; the run writes a file of that name")
    if (run_dir / TENSORBOARD_DIR).exists() and not (run_dir / TENSORBOARD_DIR).is_dir():
        raise ValueError(f"--out {run_dir}: {TENSORBOARD_DIR} is a file; the run writes a folder of that name")


def _check_new(run_dir: Path) -> None:
    names = sorted(p.name for p in run_dir.iterdir())
    if any(name in RUN_MARKERS for name in names):
        raise ValueError(
            f"--out {run_dir} already contains a training run; use --resume to continue it, --overwrite to "
            "replace it (its model, checkpoint and records; other files stay), or another --out"
        )
    started = _started_run(run_dir)
    others = [name for name in names if not _own(name, started)]
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        raise ValueError(
            f"--out {run_dir} is not empty and holds no so3krates run ({shown}); choose a new or empty "
            "directory, or pass --overwrite to write the run beside these files (they are left alone)"
        )


def _check_resumable(run_dir: Path) -> None:
    """A run with completed epochs resumes only from a readable checkpoint whose checksum matches."""
    if not (run_dir / rd.CONFIG_FILE).is_file():
        return  # nothing started yet: resuming is starting (the CLI asks for config.yaml itself)
    path = run_dir / CHECKPOINT_FILE
    if path.exists():
        try:
            checkpoint_epoch(path)
        except (ValueError, OSError) as err:
            raise ValueError(f"cannot resume {run_dir}: {error_message(err)}; {WAYS_OUT}") from None
        return
    done = _completed(run_dir)
    if done:
        raise ValueError(
            f"cannot resume {run_dir}: {path} is missing, but the run {done}; resuming would start its "
            f"training over and replace its model. {WAYS_OUT[0].upper()}{WAYS_OUT[1:]}"
        )


def _completed(run_dir: Path) -> str:
    """What shows that ``run_dir`` completed epochs (so had a checkpoint): '' when nothing does."""
    try:
        meta = json.loads((run_dir / rd.METADATA_FILE).read_text(encoding="utf-8"))
        if isinstance(meta, dict) and isinstance(meta.get("training"), dict):
            return f"finished after {meta['training'].get('epochs', 'some')} epochs ({rd.METADATA_FILE})"
    except (OSError, ValueError):
        pass
    try:
        rows = (run_dir / METRICS_FILE).read_text(encoding="utf-8").strip().splitlines()[1:]
    except (OSError, ValueError):
        rows = []
    return f"completed {len(rows)} epoch(s) ({METRICS_FILE})" if rows else ""


def clear_previous_run(run_dir: Path) -> None:
    """Before a new run writes ``run_dir`` (``--overwrite``): remove the previous run's own files, its
    TensorBoard events and temporary files of killed writes; nothing else."""
    if not run_dir.is_dir():
        return
    for path in run_dir.iterdir():
        if path.name in RUN_FILES or _temporary(path.name):
            path.unlink(missing_ok=True)
    events = run_dir / TENSORBOARD_DIR
    if events.is_dir():
        for path in events.glob("events.out.tfevents.*"):
            path.unlink(missing_ok=True)


def remove_temporaries(run_dir: Path) -> None:
    """Temporary files of atomic writes that a killed process left behind (never a complete file)."""
    if run_dir.is_dir():
        for path in run_dir.iterdir():
            if _temporary(path.name):
                path.unlink(missing_ok=True)
