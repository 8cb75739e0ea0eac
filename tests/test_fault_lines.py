"""Every fault ends with one clear line, an honest exit code and a way back (issue 17, items 2-10)."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

from ferbench.data.base import DataSource, sample_table
from ferbench.data.identity import run_id_of
from ferbench.data.preprocess import prepare_images
from ferbench.errors import ConfigError, DataError, RunFailed
from ferbench.records import record as rec
from ferbench.records.integrity import metrics_problem
from ferbench.results.aggregate import collect_records
from ferbench.run import run
from fixtures_data import face, write

FERBENCH = [sys.executable, "-c", "from ferbench.cli import main; main()"]
SMALL = [
    "trainer.batch_size=32",
    "trainer.progress_bar=false",
    "trainer.threads=1",
    "data.options.n_train=140",
    "data.options.n_test=70",
]


def ferbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*FERBENCH, *args], capture_output=True, text=True, timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


# 2. A metrics.csv cut short is corrupt: named, kept aside, and the run rebuilt.


@pytest.mark.parametrize("damage", ["cut mid-row", "empty", "header only"])
def test_damaged_metrics_csv_is_corrupt_kept_aside_and_rebuilt(make_cfg, damage, caplog):
    cfg = make_cfg()
    first = run(cfg)
    metrics = first.run_dir / "metrics.csv"
    text = metrics.read_text()
    damaged = {"cut mid-row": text[: len(text) - 40], "empty": "", "header only": text.splitlines()[0] + "\n"}
    metrics.write_text(damaged[damage])
    assert not rec.is_complete(first.run_dir)
    _, problems = collect_records(cfg.results_dir)
    assert [(p.kind, p.path) for p in problems] == [("corrupt", metrics)]
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        again = run(cfg)
    assert not again.reused and len(again.metrics) == 1 and again.metrics["status"].iloc[0] == "completed"
    assert str(metrics) in caplog.text and "corrupt" in caplog.text
    aside = list(first.run_dir.glob("metrics.csv.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_text() == damaged[damage]  # the evidence is kept
    pd.testing.assert_frame_equal(again.metrics, first.metrics)  # rebuilt from the intact fold records


def test_metrics_csv_missing_a_folds_row_is_corrupt(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text("run_id,fold,n_folds,accuracy,status\nx,0,2,0.5,completed\n")
    assert "fold" in metrics_problem(path) and "[1]" in metrics_problem(path)
    path.write_text("run_id,fold,n_folds,accuracy,status\nx,0,2,0.5,completed\nx,1,2,0.6,completed\n")
    assert metrics_problem(path) is None


# 3. A last.ckpt that cannot be read is set aside; the fold starts again.


def test_corrupt_last_checkpoint_is_set_aside_and_the_fold_restarts(make_cfg, caplog):
    cfg = make_cfg("trainer.max_epochs=2")
    last = rec.fold_dir(Path(cfg.results_dir) / "runs" / run_id_of(cfg), 0) / "checkpoints" / "last.ckpt"
    last.parent.mkdir(parents=True)
    last.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        record = run(cfg)
    assert str(last) in caplog.text
    assert len(record.metrics) == 1 and not bool(record.metrics["resumed"].iloc[0])
    assert list(record.history["epoch"]) == [1, 2]
    assert len(list(last.parent.glob("last.ckpt.corrupt-*"))) == 1


# 4. SIGTERM: a line that says how to resume, exit 143, and the same command finishes the sweep.


def _wait_for(pattern: str, root: Path, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if any(root.glob(pattern)):
            return
        time.sleep(0.05)
    raise AssertionError(f"{pattern} never appeared under {root}")


def test_sigterm_during_sweep_exits_143_and_the_same_command_finishes(tmp_path):
    results = tmp_path / "results"
    argv = [*FERBENCH, "run", "-m", "seed=0,1", "trainer.max_epochs=6", *SMALL, f"results_dir={results}"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for("runs/*/fold_0/checkpoints/last.ckpt", results, proc)  # an epoch done: mid-training
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert "run the same command to resume" in stderr and "Traceback" not in stderr
    assert "interrupted (SIGTERM) at epoch" in stderr
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    rows, problems = collect_records(results)
    assert not problems and len(rows) == 2 and sorted(rows["seed"]) == [0, 1]


def _sigint_as_at_a_terminal() -> None:
    """A shell's background job (``make test &``, some CI runners) starts with SIGINT ignored, and Python then
    installs no KeyboardInterrupt handler: give the child the terminal's default, as a user's Ctrl-C meets it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_sigint_during_a_run_exits_130_with_the_resume_line(tmp_path):
    results = tmp_path / "results"
    argv = [*FERBENCH, "run", "trainer.max_epochs=6", *SMALL, f"results_dir={results}"]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=_sigint_as_at_a_terminal
    )
    _wait_for("runs/*/fold_0/checkpoints/last.ckpt", results, proc)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted (SIGINT) at epoch" in stderr and "run the same command to resume" in stderr


def test_interrupted_survives_pickling():
    import pickle

    from ferbench.errors import Interrupted

    again = pickle.loads(pickle.dumps(Interrupted(signal.SIGTERM, "epoch 2 of 6, fold 0 of run x")))
    assert again.exit_code == 143 and str(again).startswith("interrupted (SIGTERM) at epoch 2 of 6")


# 5. An unwritable results_dir: one line before Hydra writes anything.


def test_unwritable_results_dir_is_one_line_exit_2(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    done = ferbench("run", *SMALL, f"results_dir={blocker / 'results'}")
    assert done.returncode == 2
    assert error_lines(done.stderr) == [error_lines(done.stderr)[0]] and "not writable" in done.stderr
    assert str(blocker / "results") in done.stderr


# 6. Corrupt images: the hint to skip them, no OpenCV noise, and the skipped files named in the record.


def _two_images(tmp_path: Path) -> tuple[DataSource, Path]:
    good = write(tmp_path / "good.png", face(0))
    bad = write(tmp_path / "bad.png", face(1))
    bad.write_bytes(bad.read_bytes()[: len(bad.read_bytes()) // 2])  # truncated
    samples = sample_table([{"path": str(good), "label": 0}, {"path": str(bad), "label": 1}])
    return DataSource("two", ["a", "b"], samples, fingerprint="x"), bad


def test_corrupt_image_error_says_how_to_skip_and_opencv_stays_quiet(tmp_path, capfd):
    source, bad = _two_images(tmp_path)
    with pytest.raises(DataError, match="data.skip_corrupt=true") as err:
        prepare_images(source, 32, 1, progress=False)
    assert str(bad) in str(err.value)
    assert "WARN" not in capfd.readouterr().err


def _folder_with_corrupt_image(root: Path) -> Path:
    for c, name in enumerate(("happy", "sad")):
        for i in range(8):
            write(root / name / f"{i}.png", face(100 * c + i))
    bad = root / "sad" / "3.png"
    bad.write_bytes(bad.read_bytes()[:60])
    return bad


FOLDER = ["data=folder", "split=holdout", "split.ratio=0.3", "trainer.max_epochs=1", "trainer.batch_size=16"]


def test_skipped_corrupt_images_are_named_in_the_record(make_cfg, tmp_path):
    bad = _folder_with_corrupt_image(tmp_path / "faces")
    record = run(make_cfg(*FOLDER, f"data.root={tmp_path / 'faces'}", "data.skip_corrupt=true", fast=False))
    skipped = pd.read_csv(record.run_dir / "skipped.csv")
    assert skipped.to_dict("records") == [{"path": str(bad), "reason": "corrupt_images"}]
    assert json.loads(record.metrics["skipped"].iloc[0])["corrupt_images"] == 1


# 7. The NaN line: which run, which fold, where failed.json is, what to try.


def test_nan_failure_line_names_run_fold_file_and_a_hint(make_cfg):
    cfg = make_cfg("optim.lr=1e30")
    run_dir = Path(cfg.results_dir) / "runs" / run_id_of(cfg)
    with pytest.raises(RunFailed) as err:
        run(cfg)
    line = str(err.value)
    assert run_dir.name in line and "fold 0" in line and str(run_dir / "failed.json") in line
    assert "optim.lr" in line and "\n" not in line


# 8. A run that fails while loading leaves no skeleton folder.


def test_data_error_while_loading_leaves_no_run_folder(make_cfg, tmp_path):
    _folder_with_corrupt_image(tmp_path / "faces")
    cfg = make_cfg(*FOLDER, f"data.root={tmp_path / 'faces'}", fast=False)
    with pytest.raises(DataError):
        run(cfg)
    runs = Path(cfg.results_dir) / "runs"
    assert not runs.exists() or not any(runs.iterdir())
    assert collect_records(cfg.results_dir)[1] == []


def test_model_config_error_leaves_no_run_folder(make_cfg):
    cfg = make_cfg("+model.bogus_switch=1")
    with pytest.raises(ConfigError, match="bogus_switch"):
        run(cfg)
    runs = Path(cfg.results_dir) / "runs"
    assert not runs.exists() or not any(runs.iterdir())


# 9. `--only` that matches nothing fails, naming what exists.


def test_only_that_matches_nothing_names_the_rows_and_columns(tmp_path):
    from ferbench.results.spec import load_spec
    from ferbench.tables import check_only

    body = {
        "paper": "paperx",
        "table": "t1",
        "base": ["model=simplecnn"],
        "columns": [{"key": "syn", "label": "Synthetic", "overrides": ["data=synthetic"]}],
        "rows": [{"key": "small", "label": "Small", "overrides": ["model.drop_rate=0.0"]}],
    }
    path = tmp_path / "paperx" / "t1.yaml"
    path.parent.mkdir(parents=True)
    path.write_text(yaml.safe_dump(body))
    spec = load_spec(path)
    with pytest.raises(ConfigError, match=r"--only smal names no row or column of .*rows: small; columns: syn"):
        check_only([spec], ["small", "smal"])
    check_only([spec], ["small", "syn", "small:syn"])  # a row, a column, a cell
    with pytest.raises(ConfigError, match="--only small:sin names no row"):
        check_only([spec], ["small:sin"])


def test_only_typo_on_the_command_line_exits_2(tmp_path):
    done = ferbench("table", "lightvgg/table3", "--only", "nosuchrow", f"results_dir={tmp_path}")
    assert done.returncode == 2 and "--only nosuchrow names no row or column of lightvgg/table3" in done.stderr
    assert not (tmp_path / "runs").exists()


# 10. Exit codes, tiny images, the resume line.


def test_hydra_config_error_exits_2_like_every_input_error(tmp_path):
    done = ferbench("run", "model=nosuchmodel", f"results_dir={tmp_path}")
    assert done.returncode == 2, done.stderr
    assert "nosuchmodel" in done.stderr and "Traceback" not in done.stderr


def test_tiny_images_are_warned_about(tmp_path, caplog):
    tiny = write(tmp_path / "tiny.png", face(0, size=1))
    fine = write(tmp_path / "fine.png", face(1))
    samples = sample_table([{"path": str(fine), "label": 0}, {"path": str(tiny), "label": 1}])
    source = DataSource("two", ["a", "b"], samples, fingerprint="t")
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        prepared = prepare_images(source, 32, 1, progress=False)
    assert prepared.keep.all() and prepared.skipped == {"tiny_images": 1}
    assert "1x1" in caplog.text and str(tiny) in caplog.text


class Killed(Exception):
    pass


def test_resume_says_which_fold_and_epoch(make_cfg, monkeypatch, caplog):
    from ferbench.training.lightning.module import FERModule

    cfg = make_cfg("trainer.max_epochs=3")

    def die_at_epoch_2(module):
        if module.current_epoch == 1:
            raise Killed

    with monkeypatch.context() as patch:
        patch.setattr(FERModule, "on_train_epoch_start", die_at_epoch_2, raising=False)
        with pytest.raises(Killed):
            run(cfg)
    with caplog.at_level(logging.INFO, logger="ferbench"), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run(cfg)
    assert "resumed fold 0 from epoch 2 of 3" in caplog.text
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]


# issue 23, items 10 and 13: table command input


def test_seeds_that_are_not_integers_are_one_line_exit_2():
    done = ferbench("table", "amdcnn/table6", "--render-only", "--seeds", "abc")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [
        "ferbench: error: --seeds takes comma-separated integers (e.g. 0,1,2), got 'abc'"
    ]


def test_one_broken_table_file_fails_only_the_commands_that_name_it(tmp_path, caplog):
    from ferbench.results.spec import find_specs

    good = {"paper": "p", "table": "good", "base": ["model=simplecnn"], "rows": [{"key": "r", "label": "R"}]}
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "good.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "p" / "broken.yaml").write_text("rows: [unclosed\n")
    assert [s.name for s in find_specs("p/good", tmp_path)] == ["p/good"]
    with caplog.at_level(logging.WARNING, logger="ferbench"):
        assert [s.name for s in find_specs("all", tmp_path)] == ["p/good"]
    assert "broken.yaml: not valid YAML" in caplog.text and "that table is left out" in caplog.text
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        find_specs("p/broken", tmp_path)
    own = tmp_path / "elsewhere" / "mine.yaml"  # a user's own table, outside the experiments folder
    own.parent.mkdir()
    own.write_text(yaml.safe_dump({**good, "table": "mine"}))
    assert [s.name for s in find_specs(str(own), tmp_path)] == ["p/mine"]
    with pytest.raises(ConfigError, match="no table file at"):
        find_specs(str(tmp_path / "nope.yaml"), tmp_path)


# issue 23, items 6, 7 and 9: data that cannot be split is one line, and no run folder is left


def _folder_set(root: Path, per_class: dict[str, int]) -> Path:
    for name, n in per_class.items():
        for i in range(n):
            write(root / name / f"{i}.png", face(hash((name, i)) % 10_000))
    return root


@pytest.mark.parametrize(
    ("per_class", "split", "message"),
    [
        ({"happy": 8}, ["split=kfold", "split.k=2"], "the data set has one class (label 0, 8 images)"),
        ({"happy": 6, "sad": 8}, ["split=kfold", "split.k=10"], "split.k=10 but no class has 10 images (the most: 8"),
    ],
)
def test_data_that_cannot_be_split_is_one_line_and_leaves_no_run_folder(make_cfg, tmp_path, per_class, split, message):
    root = _folder_set(tmp_path / "faces", per_class)
    cfg = make_cfg("data=folder", f"data.root={root}", *split, "trainer.max_epochs=1", fast=False)
    with pytest.raises((DataError, ConfigError), match=message.replace("(", r"\(").replace(")", r"\)")):
        run(cfg)
    assert not (Path(cfg.results_dir) / "runs").exists() or not list((Path(cfg.results_dir) / "runs").iterdir())


def test_zero_synthetic_images_is_a_config_error(make_cfg):
    with pytest.raises(ConfigError, match="data.options.n_train must be at least 1"):
        run(make_cfg("data.options.n_train=0"))


def test_leakage_with_more_folds_than_a_class_has_images_is_one_line_exit_2(tmp_path):
    root = _folder_set(tmp_path / "faces", {"happy": 3, "sad": 3})
    done = ferbench(
        "leakage", "data=folder", f"data.root={root}", "split=kfold", "split.k=50", f"cache_dir={tmp_path / 'cache'}"
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert error_lines(done.stderr)[-1].startswith("ferbench: error: split.k=50 but no class has 50 images")


# issue 23, items 12 and 14: Hydra's refusals are one prefixed line; a failed command leaves no empty folders


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["trainer.max_epoch=1"],
            "ferbench: error: unknown config key trainer.max_epoch; did you mean trainer.max_epochs?",
        ),
        (["sead=1"], "ferbench: error: unknown config key sead; did you mean seed?"),
        (["-m", "attn=cbam,nope"], "ferbench: error: unknown attn 'nope'; choose from: ca, cbam, csa, csa_channel,"),
    ],
)
def test_hydra_refusals_are_one_line_with_the_prefix_and_the_nearest_key_or_choices(tmp_path, args, line):
    done = ferbench("run", *args, f"results_dir={tmp_path}")
    assert done.returncode == 2
    (only,) = error_lines(done.stderr)
    assert only.startswith(line)
    assert not (tmp_path / "hydra").exists()


def test_a_failed_run_leaves_no_empty_hydra_folder(tmp_path):
    done = ferbench("run", "data.options.n_train=0", f"results_dir={tmp_path}")
    assert done.returncode == 2 and "data.options.n_train must be at least 1" in done.stderr
    assert not (tmp_path / "hydra").exists()


def test_a_run_logged_to_a_file_writes_one_line_per_epoch_not_a_progress_bar(tmp_path):
    """issue 23, item 17: the bar's thousands of carriage returns in a log file become one line per epoch."""
    done = ferbench("run", *SMALL, "trainer.max_epochs=2", "trainer.progress_bar=true", f"results_dir={tmp_path}")
    assert done.returncode == 0, done.stderr
    assert "\r" not in done.stderr
    epochs = [line for line in done.stderr.splitlines() if line.startswith("ferbench: epoch ")]
    assert [line.split()[2].rstrip(":") for line in epochs] == ["1/2", "2/2"]
    assert "val_loss" in epochs[0]


def test_leakage_checks_its_output_path_before_the_work(tmp_path):
    """issue 23, item 11: an unwritable --out failed with a traceback after the whole scan."""
    done = ferbench("leakage", "--out", "/proc/nope/x.json", f"results_dir={tmp_path}", "data.options.n_train=70")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert error_lines(done.stderr) == ["ferbench: error: cannot write /proc/nope/x.json: No such file or directory"]


# issue 30, item 4: a profile some tables lack


def test_all_or_a_paper_leaves_out_tables_without_the_profile_in_one_warning_line(tmp_path, caplog):
    from ferbench.results.spec import find_specs

    base = {"paper": "p", "base": ["model=simplecnn"], "rows": [{"key": "r", "label": "R"}]}
    (tmp_path / "p").mkdir()
    for name, profiles in [("a", {"smoke": [], "budget": []}), ("b", {"smoke": []}), ("c", {"smoke": []})]:
        (tmp_path / "p" / f"{name}.yaml").write_text(yaml.safe_dump({**base, "table": name, "profiles": profiles}))
    for target in ("all", "p"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="ferbench"):
            assert [s.name for s in find_specs(target, tmp_path, profile="budget")] == ["p/a"]
        (line,) = caplog.messages
        assert line == f"2 of 3 tables of '{target}' have no profile 'budget', left out: p/b, p/c"
    assert len(find_specs("all", tmp_path)) == 3  # no profile asked: every table
    assert [s.name for s in find_specs("p/b", tmp_path, profile="budget")] == ["p/b"]  # named: its build fails
    with pytest.raises(ConfigError, match="no table of 'p' has profile 'nope'; its tables have: budget, smoke"):
        find_specs("p", tmp_path, profile="nope")


def test_table_command_skips_a_paper_s_tables_without_the_profile_and_fails_on_one_named(tmp_path, capsys):
    from ferbench.cli import main

    rendered = [f"results_dir={tmp_path}", f"data_root={tmp_path / 'no-data'}", "--render-only", "profile=budget"]
    main(["table", "lightvgg", *rendered])
    warnings_ = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings_) == 1 and "have no profile 'budget', left out: lightvgg/figure8" in warnings_[0]
    assert (tmp_path / "tables" / "lightvgg" / "table3.md").is_file()
    assert not (tmp_path / "tables" / "lightvgg" / "table1.md").exists()
    with pytest.raises(SystemExit) as exited:
        main(["table", "lightvgg/table1", *rendered])
    assert exited.value.code == 2
    assert "lightvgg/table1.yaml: no profile 'budget'; choose from: converge, paper, smoke" in capsys.readouterr().err
