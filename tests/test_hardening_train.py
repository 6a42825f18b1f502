"""``so3krates train`` against bad input and faults (issue #19): nothing silently wrong, nothing lost.

Every test goes through the CLI entry point (in process, or as a child for real signals) and checks the
exit code, a message naming the file or flag and the problem, no traceback, and, where work could be
lost, that the earlier files are byte-identical afterwards.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import assert_clean_error, cli
from test_train_helpers import emt_dataset, tiny_yaml, trained_run

from so3krates import files
from so3krates import run_dir as rd
from so3krates.train import checkpoint as ck

CKPT = ck.CHECKPOINT_FILE
# The smallest training that still runs every part of an epoch (train, validate, checkpoint, records).
TINY = ["--n-train", "8", "--n-valid", "4", "--batch-size", "4", "--no-progress"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def shared(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(the shared trained run, its data file, the tiny model's --config)."""
    run_dir, data, _ = trained_run(tmp_path_factory)
    return run_dir, data, run_dir.parent / "tiny.yaml"


def _copy(run_dir: Path, where: Path) -> Path:
    return Path(shutil.copytree(run_dir, where))


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


# -- 1. --out: an unrelated directory, a finished run, --overwrite --------------------------------------


def test_out_refuses_other_files_and_runs_unless_overwrite(shared, tmp_path: Path, capsys) -> None:
    run_dir, data, config = shared
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "notes.txt").write_text("my notes\n")
    outcome = cli(["train", "--data", data, "--out", notes, "--config", config, *TINY], capsys)
    assert_clean_error(outcome, f"--out {notes}", "not empty", "notes.txt", "--overwrite")
    assert _snapshot(notes) == {"notes.txt": b"my notes\n"}  # nothing was written beside it

    old = _copy(run_dir, tmp_path / "old")
    (old / "notes.txt").write_text("my notes\n")
    before = _snapshot(old)
    outcome = cli(["train", "--data", data, "--out", old, "--config", config, *TINY], capsys)
    assert_clean_error(outcome, f"--out {old}", "already contains a training run", "--resume", "--overwrite")
    assert _snapshot(old) == before

    old_events = {p.name for p in (old / "tensorboard").iterdir()}
    outcome = cli(
        ["train", "--data", data, "--out", old, "--config", config, *TINY, "--max-epochs", "1", "--overwrite"], capsys
    )
    assert outcome.code == 0, outcome.err
    assert (old / "notes.txt").read_bytes() == b"my notes\n"  # the user's file is left alone
    assert json.loads((old / rd.METADATA_FILE).read_text())["training"]["epochs"] == 1  # the new run's
    assert [int(r["epoch"]) for r in _rows(old / "metrics.csv")] == [1]
    assert ck.checkpoint_epoch(old / CKPT) == 1
    assert not old_events & {p.name for p in (old / "tensorboard").iterdir()}  # the old run's events are gone
    outcome = cli(["train", "--out", old, "--resume", "--overwrite"], capsys)
    assert_clean_error(outcome, "--overwrite", "--resume")


# -- 2. --resume without a (readable) checkpoint ------------------------------------------------------


@pytest.mark.parametrize("damage", ["missing", "truncated", "garbage"])
def test_resume_without_a_readable_checkpoint_is_refused(shared, tmp_path: Path, capsys, damage: str) -> None:
    run_dir, _, _ = shared
    run = _copy(run_dir, tmp_path / "run")
    path = run / CKPT
    if damage == "missing":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(os.urandom(4096))
    before = _snapshot(run)
    outcome = cli(["train", "--out", run, "--resume"], capsys)
    fragments = ("is missing", "replace its model") if damage == "missing" else ("corrupted",)
    assert_clean_error(outcome, f"cannot resume {run}", str(path), *fragments, "--overwrite", "another --out")
    assert _snapshot(run) == before  # the finished model, its metrics and metadata are untouched


# -- 3. checksums: a file that still parses but has flipped bytes -------------------------------------


def test_flipped_bytes_in_the_model_or_the_checkpoint_are_named(shared, tmp_path: Path, capsys) -> None:
    run_dir, _, _ = shared
    run = _copy(run_dir, tmp_path / "run")
    weights = run / rd.WEIGHTS_FILE
    header = int.from_bytes(weights.read_bytes()[:8], "little")
    assert 8 + header < weights.stat().st_size // 2  # the middle is tensor data
    _flip(weights, weights.stat().st_size // 2)
    outcome = cli(["evaluate", "--model", run, "--out", tmp_path / "eval"], capsys)
    assert_clean_error(outcome, str(weights), "corrupted", "checksum")
    with pytest.raises(ValueError, match="checksum"):  # every loader goes through load_run: calculator, md
        rd.load_run(run)

    checkpoint = run / CKPT
    _flip(checkpoint, checkpoint.stat().st_size // 2)
    outcome = cli(["train", "--out", run, "--resume"], capsys)
    assert_clean_error(outcome, str(checkpoint), "corrupted", "checksum", "--overwrite")


def test_files_from_before_the_checksum_still_load(shared, tmp_path: Path) -> None:
    from safetensors.numpy import save

    run_dir, _, _ = shared
    run = _copy(run_dir, tmp_path / "run")
    variables = rd.read_weights(run)
    old_header = {"format": "so3krates", "format_version": "1"}  # what model.safetensors held before
    (run / rd.WEIGHTS_FILE).write_bytes(save(rd.flatten(variables), metadata=old_header))
    _, loaded, _ = rd.load_run(run)
    np.testing.assert_array_equal(loaded["normalization"]["shift"], variables["normalization"]["shift"])

    import flax.serialization

    # A version-1 checkpoint: the state itself, no envelope, no checksum.
    state = ck.read_checkpoint_state(run / CKPT)
    v1 = flax.serialization.msgpack_serialize({"format": ck.CHECKPOINT_FORMAT, "version": 1, **state})
    (run / CKPT).write_bytes(v1)
    assert ck.checkpoint_epoch(run / CKPT) == json.loads((run / rd.METADATA_FILE).read_text())["training"]["epochs"]


# -- 4. unwritable --out before the first step; a full disk during training ---------------------------


def test_unwritable_out_is_refused_before_the_data_is_read(tmp_path: Path, capsys, monkeypatch) -> None:
    missing_data = tmp_path / "never_read.extxyz"  # reading it would fail: the --out check must come first
    (tmp_path / "a_file").write_text("")
    outcome = cli(["train", "--data", missing_data, "--out", tmp_path / "a_file" / "run"], capsys)
    assert_clean_error(outcome, "--out", "a_file", "cannot write there")

    taken = tmp_path / "taken"
    (taken / rd.WEIGHTS_FILE).mkdir(parents=True)  # a folder where the run writes a file
    outcome = cli(["train", "--data", missing_data, "--out", taken, "--overwrite"], capsys)
    assert_clean_error(outcome, "--out", "model.safetensors is a directory")

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", full)  # the 64 KiB probe finds the disk full
    outcome = cli(["train", "--data", missing_data, "--out", tmp_path / "full"], capsys)
    assert_clean_error(outcome, "--out", "full", "No space left on device")


def test_disk_full_while_training_keeps_the_last_checkpoint(shared, tmp_path: Path, capsys, monkeypatch) -> None:
    _, data, config = shared
    run = tmp_path / "run"
    path = run / CKPT
    saved: list[bytes] = []
    real = ck.atomic_write_bytes

    def checkpoint_write(target: Path, payload: bytes) -> None:
        if len(saved) < 1:
            real(target, payload)
            saved.append(Path(target).read_bytes())
            return

        def half_then_full(f) -> None:  # the disk fills up half-way through the second checkpoint
            f.write(payload[: len(payload) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        files.atomic_write(target, half_then_full)

    monkeypatch.setattr(ck, "atomic_write_bytes", checkpoint_write)
    args = ["train", "--data", data, "--out", run, "--config", config, *TINY, "--max-epochs", "3"]
    outcome = cli(args, capsys)
    assert_clean_error(outcome, str(path), "No space left on device", "checkpoint of epoch 1", "--resume")
    assert path.read_bytes() == saved[0]  # byte-identical: the failed write left it alone
    assert ck.checkpoint_epoch(path) == 1
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]

    monkeypatch.undo()
    outcome = cli(["train", "--out", run, "--resume"], capsys)
    assert outcome.code == 0, outcome.err
    assert "after epoch 1" in outcome.out  # resumed from the intact checkpoint
    assert [int(r["epoch"]) for r in _rows(run / "metrics.csv")] == [1, 2, 3]


# -- 5. Ctrl-C and SIGTERM: exit non-zero after a resumable checkpoint -------------------------------


def _signal_after_epochs(monkeypatch, signum: int, epochs: int = 1) -> None:
    """Send ``signum`` to this process once ``epochs`` epochs have written their records (as Ctrl-C or a
    batch system's SIGTERM would, between two steps)."""
    from so3krates.train import records

    write, calls = records.EpochRecords.write, []

    def write_then_signal(self, history) -> None:
        write(self, history)
        calls.append(1)
        if len(calls) == epochs:
            os.kill(os.getpid(), signum)

    monkeypatch.setattr(records.EpochRecords, "write", write_then_signal)


def test_ctrl_c_then_sigterm_exit_nonzero_with_a_resumable_checkpoint(shared, tmp_path: Path, capsys, monkeypatch):
    _, data, config = shared
    run = tmp_path / "run"
    _signal_after_epochs(monkeypatch, signal.SIGINT)
    # Python's own Ctrl-C handler, whatever this test process inherited (a background job ignores SIGINT).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        outcome = cli(["train", "--data", data, "--out", run, "--config", config, *TINY, "--max-epochs", "50"], capsys)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert "Traceback" not in outcome.err
    assert outcome.code == 130, outcome.out + outcome.err
    epoch = ck.checkpoint_epoch(run / CKPT)
    assert epoch == 1
    assert f"interrupted (SIGINT) after epoch {epoch}" in outcome.err and "--resume" in outcome.err
    rd.load_run(run)  # the best model so far is saved as well

    monkeypatch.undo()
    _signal_after_epochs(monkeypatch, signal.SIGTERM)  # resume it, and stop it with SIGTERM after one epoch
    outcome = cli(["train", "--out", run, "--resume"], capsys)
    assert "Traceback" not in outcome.err
    assert outcome.code == 143, outcome.out + outcome.err
    assert f"after epoch {epoch}" in outcome.out  # resumed where Ctrl-C stopped it
    assert f"interrupted (SIGTERM) after epoch {epoch + 1}" in outcome.err and "--resume" in outcome.err
    assert ck.checkpoint_epoch(run / CKPT) == epoch + 1
    assert [int(r["epoch"]) for r in _rows(run / "metrics.csv")] == list(range(1, epoch + 2))


@pytest.mark.slow
def test_ctrl_c_to_a_child_process_exits_130_with_a_resumable_checkpoint(shared, tmp_path: Path) -> None:
    """The same as a user sees it: a real SIGINT to a ``so3krates train`` process."""
    _, data, config = shared
    run = tmp_path / "run"
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "so3krates.cli.main", "train", "--data", str(data), "--out", str(run)]
    command += ["--config", str(config), *TINY, "--max-epochs", "1000"]
    # A child of a background job (nohup, some CI runners) inherits SIGINT ignored, and Python then installs
    # no KeyboardInterrupt handler: give it the disposition of a program started from a terminal.
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 240
        while child.poll() is None and time.monotonic() < deadline:
            if (run / "metrics.csv").exists() and len(_rows(run / "metrics.csv")) >= 1:
                break
            time.sleep(0.05)
        assert child.poll() is None, child.communicate()
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert "Traceback" not in err, err
    assert child.returncode == 130, out + err
    epoch = ck.checkpoint_epoch(run / CKPT)
    assert epoch >= 1
    assert f"interrupted (SIGINT) after epoch {epoch}" in err and "--resume" in err
    rd.load_run(run)


# -- 6. model and training numbers that cannot work ---------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "fragments"),
    [
        (["--layers", "0"], ("--layers", "≥ 1", "got 0")),
        (["--features", "0"], ("--features", "≥ 1")),
        (["--heads", "0"], ("--heads", "≥ 1")),
        (["--degrees", "2,2"], ("--degrees", "distinct")),
        (["--cutoff", "-1"], ("--cutoff", "positive")),
        (["--lr", "-0.1"], ("--lr", "positive")),
        (["--batch-size", "0"], ("--batch-size", "≥ 1")),
        (["--n-train", "0"], ("--n-train", "at least 1")),
        (["--max-epochs", "0"], ("--max-epochs", "≥ 1")),
        (["--features", "16"], ("--features", "divisible", "degrees")),  # 3 default degrees
    ],
)
def test_impossible_numbers_name_their_flag(tmp_path: Path, capsys, flags: list[str], fragments: tuple[str]) -> None:
    outcome = cli(["train", "--data", tmp_path / "d.extxyz", "--out", tmp_path / "run", *flags], capsys)
    assert_clean_error(outcome, *fragments)
    assert not (tmp_path / "run").exists()


def test_num_radial_zero_in_a_config_file(tmp_path: Path, capsys) -> None:
    config = tiny_yaml(tmp_path / "c.yaml")
    config.write_text(config.read_text().replace("num_radial: 8", "num_radial: 0"))
    data = emt_dataset(tmp_path / "d.extxyz", 4)
    outcome = cli(["train", "--data", data, "--config", config, "--out", tmp_path / "run"], capsys)
    assert_clean_error(outcome, str(config), "num_radial", "≥ 1")


# -- 7. kill -9 at random points, resume each time: the same model as an uninterrupted run ------------

# The child: ``so3krates train`` which, when asked, SIGKILLs itself on its N-th checkpoint write after
# the temporary file is written and synced, before the rename (test-only code, no hook in the package).
KILLING_CHILD = r"""
import os, signal, sys
n = int(os.environ.get("KILL_AT_CHECKPOINT_WRITE", "0"))
if n:
    real_replace, writes = os.replace, []
    def replace(src, dst, *args, **kwargs):
        if str(dst).endswith("checkpoint_latest.msgpack"):
            writes.append(dst)
            if len(writes) == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *args, **kwargs)
    os.replace = replace
from so3krates.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def _tensors(run: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(run / rd.WEIGHTS_FILE)


def _epochs_done(run: Path) -> int:
    return ck.checkpoint_epoch(run / CKPT) if (run / CKPT).exists() else 0


def _without_times(rows: list[dict[str, str]]) -> list[dict[str, float | None]]:
    return [{k: float(v) if v else None for k, v in r.items() if k not in ("time_s", "elapsed_s")} for r in rows]


@pytest.mark.slow
def test_kill_9_at_random_points_then_resume_gives_the_uninterrupted_model(tmp_path: Path) -> None:
    data = emt_dataset(tmp_path / "emt.extxyz", n_frames=24, seed=5)
    config = tiny_yaml(tmp_path / "tiny.yaml")
    max_epochs, min_kills = 60, 22
    env = {
        **os.environ,
        "JAX_PLATFORMS": "cpu",
        "PYTHONUNBUFFERED": "1",
        # Every restart loads the compiled steps instead of compiling them again.
        "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }

    def command(out: Path) -> list[str]:
        flags = ["--n-train", "16", "--n-valid", "4", "--batch-size", "2", "--max-epochs", str(max_epochs)]
        flags += ["--schedule", "plateau", "--plateau-patience", "2", "--no-progress"]  # schedule state matters
        return [sys.executable, "-c", KILLING_CHILD, "train", "--data", str(data), "--out", str(out)] + [
            "--config",
            str(config),
            *flags,
        ]

    reference = tmp_path / "reference"
    done = subprocess.run(command(reference), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    elapsed = [float(r["elapsed_s"]) for r in _rows(reference / "metrics.csv")]
    epoch_s = (elapsed[-1] - elapsed[0]) / (len(elapsed) - 1)  # one epoch once compiled

    run, rng = tmp_path / "run", np.random.default_rng(19)
    kills, at_write, log, progress = 0, 0, tmp_path / "child.log", []
    while kills < min_kills:
        before = _epochs_done(run)
        resume = ["--resume"] if (run / rd.CONFIG_FILE).exists() else []
        write_kill = kills in (3, 11)  # on the 1st or 2nd checkpoint write of this process
        child_env = {**env, "KILL_AT_CHECKPOINT_WRITE": str(rng.integers(1, 3)) if write_kill else "0"}
        with open(log, "w") as out:
            child = subprocess.Popen(command(run) + resume, stdout=out, stderr=subprocess.STDOUT, env=child_env)
            if not write_kill:
                _kill_at_a_random_point(child, run, log, rng, before, epoch_s)
            code = child.wait(timeout=300)
        assert code == -signal.SIGKILL, f"exit {code} (epoch {_epochs_done(run)} of {max_epochs}):\n{log.read_text()}"
        kills += 1
        after = _epochs_done(run)  # the checkpoint on disk always reads (checksum included)
        assert after >= before
        progress.append(after)
        if write_kill:
            n = int(child_env["KILL_AT_CHECKPOINT_WRITE"])
            assert after == before + n - 1  # the write that was killed left the previous checkpoint
            assert any(p.name.startswith(f".{CKPT}.") for p in run.iterdir())  # killed before its rename
            at_write += 1
    assert at_write == 2 and _epochs_done(run) < max_epochs, progress
    print(f"checkpointed epoch after each of the {kills} kills: {progress}")

    done = subprocess.run(command(run) + ["--resume"], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not [p.name for p in run.iterdir() if p.name.endswith(".tmp")]
    expected, got = _tensors(reference), _tensors(run)
    assert expected.keys() == got.keys()
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], rtol=1e-6, atol=1e-7, err_msg=name)
    want, have = _without_times(_rows(reference / "metrics.csv")), _without_times(_rows(run / "metrics.csv"))
    assert [r["epoch"] for r in have] == list(range(1, max_epochs + 1))
    for a, b in zip(have, want, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert a[key] == pytest.approx(b[key], rel=1e-6, abs=1e-9), (a["epoch"], key)


def _kill_at_a_random_point(
    child: subprocess.Popen, run: Path, log: Path, rng: np.random.Generator, before: int, epoch_s: float
) -> None:
    """SIGKILL ``child`` at a random moment: in its start-up (data, neighbour lists, loading the compiled
    steps), in its first epoch, or in its second (a step, validation, a checkpoint or metrics write); it
    completes at most about two epochs first, so that the run takes many kills to finish."""

    def alive_until(condition, seconds: float = 120.0) -> bool:
        end = time.monotonic() + seconds
        while child.poll() is None and time.monotonic() < end:
            if condition():
                return True
            time.sleep(0.003)
        return False

    training = lambda: "training " in log.read_text()  # noqa: E731
    if rng.random() < 0.2 and not alive_until(training, rng.uniform(0.5, 5.0)):
        child.send_signal(signal.SIGKILL)  # still starting up
        return
    alive_until(training)
    epochs = int(rng.integers(0, 2))  # let this many epochs complete first
    if epochs == 0:  # somewhere in the first epoch (compiled steps loaded, steps, checkpoint), or just after it
        alive_until(lambda: _rows_done(run) > before, rng.uniform(0.0, 2.5))
    else:
        alive_until(lambda: _rows_done(run) >= before + epochs)
        time.sleep(rng.uniform(0.0, epoch_s))
    if child.poll() is None:
        child.send_signal(signal.SIGKILL)


def _rows_done(run: Path) -> int:
    try:
        return len((run / "metrics.csv").read_text().splitlines()) - 1
    except OSError:
        return 0


def test_files_named_like_run_files_but_not_a_run_are_refused(tmp_path: Path, capsys) -> None:
    """A folder with the user's own metrics.csv and metadata.json (no run marker) is not a run to replace."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "metrics.csv").write_text("my,own,data\n")
    (mine / rd.METADATA_FILE).write_text('{"mine": 1}')
    before = _snapshot(mine)
    outcome = cli(["train", "--data", tmp_path / "never_read.extxyz", "--out", mine], capsys)
    assert_clean_error(outcome, f"--out {mine}", "not empty", "metrics.csv", "--overwrite")
    assert _snapshot(mine) == before
