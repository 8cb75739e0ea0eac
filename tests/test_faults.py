"""Sweeps that survive faults: resume exactly, never train a run twice, record failures, report what is missing."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from ferbench.data.identity import run_id_of
from ferbench.errors import FerbenchError, RunBusy, RunFailed
from ferbench.records import record as rec
from ferbench.results.aggregate import collect_records
from ferbench.run import run
from ferbench.training.lightning.module import FERModule

FERBENCH = [sys.executable, "-c", "from ferbench.cli import main; main()"]
SMALL = ["trainer.batch_size=32", "trainer.progress_bar=false", "data.options.n_train=140", "data.options.n_test=70"]
METRICS = ["accuracy", "precision", "recall", "f1", "map"]


def ferbench(*args: str, results: Path, **kwargs) -> subprocess.CompletedProcess:
    argv = [*FERBENCH, "run", *args, *SMALL, f"results_dir={results}"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kwargs)


class Killed(Exception):
    pass


@pytest.mark.parametrize("workers", [0, 2])
def test_killed_run_resumes_exactly(make_cfg, tmp_path, monkeypatch, workers):
    """Killed at the start of epoch 3, resumed from last.ckpt: every epoch once, numbers as if never killed.

    With loader processes too (persistent ones, which a resumed fit starts afresh): augmentation is seeded per
    batch from the epoch's sampler, not from a worker's own stream.
    """
    overrides = ("trainer.max_epochs=4", "model.drop_rate=0.2", "aug=basic", f"trainer.num_workers={workers}")
    whole = run(make_cfg(*overrides, f"results_dir={tmp_path / 'whole'}"))

    def die_at_epoch_3(module):
        if module.current_epoch == 2:
            raise Killed

    cfg = make_cfg(*overrides)
    with monkeypatch.context() as patch:
        patch.setattr(FERModule, "on_train_epoch_start", die_at_epoch_3, raising=False)
        with pytest.raises(Killed):
            run(cfg)
    run_dir = Path(cfg.results_dir) / "runs" / run_id_of(cfg)
    assert (rec.fold_dir(run_dir, 0) / "checkpoints" / "last.ckpt").is_file() and not rec.is_complete(run_dir)
    resumed = run(cfg)
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
    assert bool(resumed.metrics["resumed"].iloc[0])
    timing = ["epoch_seconds"]  # wall clock differs between any two runs
    pd.testing.assert_frame_equal(resumed.history.drop(columns=timing), whole.history.drop(columns=timing))
    pd.testing.assert_frame_equal(resumed.metrics[METRICS], whole.metrics[METRICS])


def test_complete_run_is_skipped_and_locked_run_is_not_trained_twice(make_cfg):
    cfg = make_cfg()
    run_dir = Path(cfg.results_dir) / "runs" / run_id_of(cfg)
    run_dir.mkdir(parents=True)
    with rec.run_lock(run_dir):
        assert rec.is_locked(run_dir)
        with pytest.raises(RunBusy, match="being trained by another process"):
            run(cfg)
    assert not rec.is_locked(run_dir)  # released with its holder
    first = run(cfg)
    assert not first.reused and run(cfg).reused


def test_nan_loss_is_recorded_as_failed_and_aggregation_sees_it(make_cfg):
    cfg = make_cfg("optim.lr=1e30")  # Adam steps by ~lr: the weights blow up and the loss is NaN at batch 1
    with pytest.raises(RunFailed, match="nan"):
        run(cfg)
    run_dir = Path(cfg.results_dir) / "runs" / run_id_of(cfg)
    failure = json.loads((run_dir / "failed.json").read_text())
    assert failure["epoch"] == 1 and failure["fold"] == 0 and "nan" in failure["reason"]
    rows, problems = collect_records(cfg.results_dir)
    assert rows.empty and [(p.kind, p.run_id, p.epoch) for p in problems] == [("failed", run_dir.name, 1)]


def test_unwritable_results_dir_fails_before_training(make_cfg, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")  # fails for root too, unlike chmod
    with pytest.raises(FerbenchError, match="not writable"):
        run(make_cfg(f"results_dir={blocker / 'results'}"))


def test_unwritable_results_dir_by_permission(make_cfg, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    if os.access(locked, os.W_OK):
        pytest.skip("running as root: permissions do not stop writes")
    with pytest.raises(FerbenchError, match="not writable"):
        run(make_cfg(f"results_dir={locked / 'results'}"))


def test_runs_starting_at_once_in_one_results_dir_both_pass_the_write_check(tmp_path):
    """Two runs launched together once shared the probe file's name: the second unlink failed and that run died
    with "not writable: No such file or directory" (seen starting two detector runs side by side)."""
    from concurrent.futures import ThreadPoolExecutor

    from ferbench.records.run_folder import ensure_writable

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda _: [ensure_writable(tmp_path) for _ in range(50)], range(8)))
    assert not list(tmp_path.iterdir())


def _fake_run(results: Path, name: str, metrics: str | None = None, folds: int = 0) -> Path:
    run_dir = results / "runs" / name
    run_dir.mkdir(parents=True)
    for k in range(folds):
        rec.write_fold(run_dir, k, {"fold": k}, pd.DataFrame(), pd.DataFrame())
    if metrics is not None:
        (run_dir / "metrics.csv").write_text(metrics)
    return run_dir


def test_aggregation_reports_every_problem_with_its_path(tmp_path):
    results = tmp_path / "results"
    _fake_run(results, "good", "run_id,fold,accuracy\ngood,0,0.5\ngood,1,0.7\n")
    _fake_run(results, "half", folds=2)
    bad = _fake_run(results, "garbled", 'run_id,fold,accuracy\n"good,0\n')
    nocol = _fake_run(results, "nocolumn", "run_id,fold\nx,0\n")
    failed = _fake_run(results, "nan", folds=1)
    rec.write_failure(failed, "loss became nan at epoch 3, batch 0", 1, 3)
    rows, problems = collect_records(results)
    assert list(rows["accuracy"]) == [0.5, 0.7]
    by_run = {p.run_id: p for p in problems}
    assert set(by_run) == {"half", "garbled", "nocolumn", "nan"}
    assert by_run["half"].kind == "incomplete" and by_run["half"].folds_done == [0, 1]
    assert by_run["garbled"].kind == "corrupt" and by_run["garbled"].path == bad / "metrics.csv"
    assert by_run["nocolumn"].kind == "corrupt" and "accuracy" in by_run["nocolumn"].detail
    assert by_run["nocolumn"].path == nocol / "metrics.csv"
    assert by_run["nan"].kind == "failed" and by_run["nan"].epoch == 3 and by_run["nan"].folds_done == [0]


def test_sweep_goes_on_after_a_nan_run_and_exits_1(tmp_path):
    results = tmp_path / "results"
    done = ferbench("-m", "optim.lr=1e30,0.001", "trainer.max_epochs=1", results=results)
    assert done.returncode == 1, done.stderr
    assert "loss became nan" in done.stderr and "Traceback" not in done.stderr
    rows, problems = collect_records(results)
    assert len(rows) == 1 and [p.kind for p in problems] == ["failed"]


def test_two_concurrent_sweeps_record_every_run_once(tmp_path):
    """Overlapping grids on one results dir: each run trained by one process, recorded once."""
    results = tmp_path / "results"
    grid = ["trainer.max_epochs=2", "trainer.threads=1"]
    argv = [*FERBENCH, "run", "-m", *grid, *SMALL, f"results_dir={results}"]
    procs = [
        subprocess.Popen([*argv, seeds], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for seeds in ("seed=0,1,2", "seed=2,1,3")
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    rows, problems = collect_records(results)
    # A run the other sweep is training is skipped, not waited for; its holder finishes it.
    assert not problems and len(rows) == 4 and rows["run_id"].is_unique and sorted(rows["seed"]) == [0, 1, 2, 3]
    assert len(list((results / "runs").iterdir())) == 4


def test_launcher_configs(tmp_path):
    """Ours extend the plugins' own configs; an absent optional plugin fails with the extra to install."""
    from hydra import compose, initialize_config_dir

    from ferbench.paths import config_dir

    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=local"], return_hydra_config=True)
    assert cfg.hydra.launcher.n_jobs == 2 and cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    plugins = (("slurm", "submitit", "hydra_submitit_launcher"), ("ray_cluster", "ray", "hydra_ray_launcher"))
    for name, extra, plugin in plugins:
        if importlib.util.find_spec(f"hydra_plugins.{plugin}") is not None:  # installed: ours composes over it
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                cfg = compose("config", overrides=[f"hydra/launcher={name}"], return_hydra_config=True)
            assert cfg.hydra.launcher._target_.startswith(f"hydra_plugins.{plugin}.")
        else:
            done = ferbench(f"hydra/launcher={name}", results=tmp_path)
            assert done.returncode == 2 and f"pip install 'ferbench[{extra}]'" in done.stderr


def _wait_until_training(results: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until the restarted sweep has begun a run (written its config.yaml): a kill during Python's start-up
    would test nothing."""
    since, deadline = time.time(), time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_mtime >= since for p in results.glob("runs/*/config.yaml")):
            return
        time.sleep(0.05)


@pytest.mark.slow
def test_sweep_survives_sigkill(tmp_path):
    """A 6-run sweep SIGKILLed 3 times at random points and restarted: every run recorded once, exactly as
    an uninterrupted sweep records it."""
    grid = ["-m", "seed=0,1,2", "model.drop_rate=0.1,0.2", "trainer.max_epochs=3", "trainer.threads=1"]
    argv = [*FERBENCH, "run", *grid, *SMALL]
    reference = subprocess.run([*argv, f"results_dir={tmp_path / 'reference'}"], capture_output=True, timeout=600)
    assert reference.returncode == 0, reference.stderr
    results = tmp_path / "killed"
    rng = random.Random(7)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            [*argv, f"results_dir={results}"],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_until_training(results, proc)
        time.sleep(rng.uniform(0.2, 2.0))  # a run takes a few seconds here: this lands mid-run or between runs
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    final = subprocess.run([*argv, f"results_dir={results}"], capture_output=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert kills == 3
    ours, problems = collect_records(results)
    theirs, _ = collect_records(tmp_path / "reference")
    assert not problems and len(ours) == 6 and ours["run_id"].is_unique
    assert sorted(p.name for p in (results / "runs").iterdir()) == sorted(theirs["run_id"])
    ours, theirs = ours.set_index("run_id").sort_index(), theirs.set_index("run_id").sort_index()
    pd.testing.assert_frame_equal(ours[METRICS], theirs[METRICS])  # exact: resume re-seeds every epoch
    for run_id in ours.index:
        history = pd.read_csv(results / "runs" / run_id / "history.csv")
        assert list(history["epoch"]) == [1, 2, 3]
        reference_history = pd.read_csv(tmp_path / "reference" / "runs" / run_id / "history.csv")
        wall = ["lr", "epoch_seconds"]
        pd.testing.assert_frame_equal(history.drop(columns=wall), reference_history.drop(columns=wall))


def test_loader_processes_do_not_change_the_numbers(make_cfg, tmp_path):
    """num_workers is not part of the run id, so it must not change what a run draws: 0 and 2 train alike."""
    overrides = ("trainer.max_epochs=2", "aug=basic")
    solo = run(make_cfg(*overrides, "trainer.num_workers=0", f"results_dir={tmp_path / 'w0'}"))
    pooled = run(make_cfg(*overrides, "trainer.num_workers=2", f"results_dir={tmp_path / 'w2'}"))
    timing = ["epoch_seconds"]
    pd.testing.assert_frame_equal(pooled.history.drop(columns=timing), solo.history.drop(columns=timing))
    pd.testing.assert_frame_equal(pooled.metrics[METRICS], solo.metrics[METRICS])


def test_a_loss_finite_in_training_but_not_in_validation_fails_the_run(make_cfg):
    """One training batch per epoch (140 images, batch 64): Adam at lr 1e30 leaves a finite training loss and
    weights that make the validation loss NaN. Early stopping used to end the run on it, recorded as completed at
    chance accuracy; it must fail like any other diverged run."""
    cfg = make_cfg("optim.lr=1e30", "trainer.batch_size=64", "trainer.max_epochs=2")
    with pytest.raises(RunFailed, match="val loss became nan at epoch 1"):
        run(cfg)
    run_dir = Path(cfg.results_dir) / "runs" / run_id_of(cfg)
    assert not (run_dir / "metrics.csv").exists()
    assert json.loads((run_dir / "failed.json").read_text())["epoch"] == 1


def test_written_files_get_the_umasks_mode_not_a_private_one(make_cfg, tmp_path):
    """Records are written to a private temporary file and renamed: they used to stay 0600, unreadable to
    collaborators on a shared disk. Every file a run writes gets what a plain open() gives under the umask."""
    import stat

    from ferbench.records.atomic import write_text

    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(write_text(tmp_path / "t.md", "x").stat().st_mode) == 0o644
        cfg = make_cfg("trainer.max_epochs=1")
        run(cfg)
        run_dir = Path(cfg.results_dir) / "runs" / run_id_of(cfg)
        private = [p for p in run_dir.rglob("*") if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o044 != 0o044]
        assert not private, [(str(p.relative_to(run_dir)), oct(p.stat().st_mode)) for p in private]
    finally:
        os.umask(old)


def test_a_value_that_is_not_a_number_makes_metrics_csv_corrupt_and_the_rerun_rebuilds_it(make_cfg):
    """accuracy replaced by 'abc': the rerun used to crash on it (``Unknown format code 'f'``) and
    collect_records reported the run complete with accuracy 'abc'."""
    cfg = make_cfg("trainer.max_epochs=1")
    first = run(cfg)
    metrics = Path(cfg.results_dir) / "runs" / first.run_id / "metrics.csv"
    frame = pd.read_csv(metrics)
    frame["accuracy"] = frame["accuracy"].astype(object)
    frame.loc[0, "accuracy"] = "abc"
    frame.to_csv(metrics, index=False)
    rows, problems = collect_records(cfg.results_dir)
    assert rows.empty and [(p.kind, p.detail) for p in problems] == [("corrupt", "not a number: accuracy='abc'")]
    again = run(cfg)
    assert float(pd.read_csv(metrics)["accuracy"].iloc[0]) == pytest.approx(float(first.metrics["accuracy"].iloc[0]))
    assert not again.reused and list(metrics.parent.glob("metrics.csv.corrupt-*"))


def test_gallery_export_keeps_complete_records_without_weights(make_cfg, tmp_path):
    """A gallery copy is a results_dir of records only: it renders and pairs like the original, weighs little."""
    from ferbench.results.gallery import export

    cfg = make_cfg("trainer.max_epochs=1", "split=kfold", "split.k=2")
    done = run(cfg)
    broken = Path(cfg.results_dir) / "runs" / "simplecnn-none-synthetic-kfold-s9-unfinished"
    broken.mkdir()
    (copied,) = export(Path(cfg.results_dir), tmp_path / "gallery")
    assert copied.name == done.run_id and rec.is_complete(copied)
    assert not list(copied.rglob("*.ckpt")) and (copied / "folds.npz").is_file()
    assert (copied / "fold_1" / "metrics.json").is_file()
    rows, problems = collect_records(tmp_path / "gallery")
    assert len(rows) == 2 and not problems


@pytest.mark.parametrize(
    ("name", "damage"), [("config.yaml", "a: [unclosed\n"), ("folds.npz", "not a zip"), ("leakage.json", "{cut")]
)
def test_a_complete_run_with_a_damaged_companion_file_is_rebuilt_not_reused(make_cfg, monkeypatch, name, damage):
    """Reuse depends on config.yaml, folds.npz (pairs runs for the claims) and leakage.json (table notes): a
    damaged one used to be reused silently. It is set aside with one line and written again; finished folds are
    not retrained (their records are reused)."""
    cfg = make_cfg("trainer.max_epochs=1", "split=kfold", "split.k=2")
    first = run(cfg)
    path = first.run_dir / name
    before = path.read_bytes()
    path.write_text(damage)
    assert not rec.is_complete(first.run_dir)
    monkeypatch.setattr("ferbench.run.train_solo", lambda *a, **k: pytest.fail("a finished fold was retrained"))
    again = run(cfg)
    assert path.read_bytes() == before if name != "leakage.json" else json.loads(path.read_text())
    assert len(list(first.run_dir.glob(f"{name}.corrupt-*"))) == 1
    assert rec.is_complete(first.run_dir)
    pd.testing.assert_frame_equal(first.metrics[["fold", "accuracy"]], again.metrics[["fold", "accuracy"]])


@pytest.mark.parametrize("names", [["folds.npz"], ["samples.csv.gz"], ["config.yaml"], ["folds.npz", "leakage.json"]])
def test_a_complete_run_missing_a_companion_is_damaged_said_in_one_line_and_rebuilt(
    make_cfg, monkeypatch, caplog, names
):
    """A deleted folds.npz (or samples.csv.gz, config.yaml, leakage.json) under a complete run was reused and never
    rebuilt; the claims then switched to Welch with a false "nothing pairs" (issue 33, item 4)."""
    cfg = make_cfg("trainer.max_epochs=1", "split=kfold", "split.k=2")
    first = run(cfg)
    before = {name: (first.run_dir / name).read_bytes() for name in names}
    for name in names:
        (first.run_dir / name).unlink()
    assert not rec.is_complete(first.run_dir)
    monkeypatch.setattr("ferbench.run.train_solo", lambda *a, **k: pytest.fail("a finished fold was retrained"))
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        again = run(cfg)
    lines = [r.getMessage() for r in caplog.records if "missing" in r.getMessage()]
    assert len(lines) == 1 and f"{first.run_dir} is damaged: {', '.join(names)} missing" in lines[0], caplog.text
    assert rec.is_complete(first.run_dir) and not again.reused
    for name in names:
        if name == "samples.csv.gz":  # gzip stamps its own time: the table, not the bytes
            pd.testing.assert_frame_equal(pd.read_csv(first.run_dir / name), pd.read_csv(io.BytesIO(before[name]),
                                          compression="gzip"))  # fmt: skip
        elif name != "leakage.json":
            assert (first.run_dir / name).read_bytes() == before[name], name
    pd.testing.assert_frame_equal(first.metrics[["fold", "accuracy"]], again.metrics[["fold", "accuracy"]])


def test_a_run_dir_without_metrics_names_no_missing_companion(tmp_path, caplog):
    """A run not yet finished (or starting) lacks its companions by design: nothing to say about them."""
    from ferbench.records.integrity import companion_problems, set_aside_damaged_metrics

    (tmp_path / "run").mkdir()
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        set_aside_damaged_metrics(tmp_path / "run")
    assert companion_problems(tmp_path / "run") == {} and not caplog.records


def test_render_says_when_a_leakage_file_is_damaged(tmp_path, caplog):
    from ferbench.data.leakage import read_leakage

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    (run_dir / "leakage.json").write_text("{cut")
    assert read_leakage([run_dir]) is None
    assert "leakage.json is damaged" in caplog.text


def test_reidentify_gives_a_run_trained_under_an_older_fingerprint_todays_id(make_cfg, tmp_path):
    """A record whose data fingerprint came from an earlier definition (file dates) gets today's id, its files
    rewritten and a note saying from what; a record whose config does not give back its own id is refused."""
    from ferbench.results.gallery import reidentify

    done = run(make_cfg("trainer.max_epochs=1"))
    old_id = rec.run_id(OmegaConf.load(done.run_dir / "config.yaml"), "data-0123456789ab")
    old_dir = done.run_dir.with_name(old_id)
    done.run_dir.rename(old_dir)
    metrics = pd.read_csv(old_dir / "metrics.csv")
    metrics.assign(run_id=old_id, data_fingerprint="data-0123456789ab").to_csv(old_dir / "metrics.csv", index=False)
    assert reidentify(old_dir) == done.run_id
    again = rec.RunRecord.load(done.run_dir)
    assert again.metrics["run_id"].iloc[0] == done.run_id
    assert json.loads((done.run_dir / "reidentified.json").read_text())["old_run_id"] == old_id
    assert reidentify(done.run_dir) is None  # already today's
    (done.run_dir / "metrics.csv").write_text(pd.read_csv(done.run_dir / "metrics.csv").assign(run_id="x").to_csv())
    with pytest.raises(ValueError, match="does not give back its recorded id"):
        reidentify(done.run_dir)


def test_a_run_folder_moved_before_resuming_keeps_its_best_checkpoint_score(make_cfg, tmp_path, monkeypatch):
    """A half-trained run copied to another results dir and resumed there: Lightning would drop the best val_loss
    (its saved dirpath differs) and call the next epoch best whatever its loss; ours rebases the saved paths."""
    import shutil
    import warnings

    from ferbench.records.safe_load import load_weights
    from ferbench.training.resume import MovableCheckpoint

    def die_at_epoch_3(module):
        if module.current_epoch == 2:
            raise Killed

    first = tmp_path / "first"
    cfg = make_cfg("trainer.max_epochs=4", f"results_dir={first}")
    with monkeypatch.context() as patch:
        patch.setattr(FERModule, "on_train_epoch_start", die_at_epoch_3, raising=False)
        with pytest.raises(Killed):
            run(cfg)
    run_id = run_id_of(cfg)
    moved = tmp_path / "moved"
    shutil.copytree(first / "runs", moved / "runs")
    shutil.rmtree(first)
    last = rec.fold_dir(moved / "runs" / run_id, 0) / "checkpoints" / "last.ckpt"
    state = next(v for k, v in load_weights(last, "test")["callbacks"].items() if k.startswith("ModelCheckpoint"))
    assert str(first) in state["dirpath"]

    callback = MovableCheckpoint(dirpath=last.parent, monitor="val_loss", mode="min")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Lightning's "dirpath has changed" warning would raise here
        callback.load_state_dict(dict(state))
    assert float(callback.best_model_score) == float(state["best_model_score"])
    assert callback.best_model_path == str(last.parent / "best.ckpt")
    assert list(callback.best_k_models) == [str(last.parent / "best.ckpt")]

    resumed = run(make_cfg("trainer.max_epochs=4", f"results_dir={moved}"))
    assert list(resumed.history["epoch"]) == [1, 2, 3, 4]
