"""Command line: parses and dispatches; the work is done by functions the tests call directly.

ferbench run [group=choice ...] [key=value ...] [-m]   one run, or a Hydra sweep with -m
ferbench datasets [--data-root DIR]                    every data set: where, present, counts
ferbench table <paper>/<table>|<paper>|all [profile=smoke|paper] [--render-only] [key=value ...]
ferbench gallery [--manifest results/gallery/gallery.yaml] [key=value ...]   the gallery page, from its records
ferbench leakage [--out F.json] [--grid F.png] [key=value ...]   train/test overlap of a config's split
ferbench bench [--cases a,b] [--steps N] [--batch-size B] [--device auto|cpu|cuda] [--quick] [--options]
               [--concurrent 1,2,4] [--pack 1,8,32] [--out FILE] [key=value ...]
                                                       speed: ferbench vs a plain PyTorch loop; packed vs solo
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from ferbench.errors import DISK_FULL, CannotWrite, FerbenchError, Interrupted, RunFailed, cannot_write  # noqa: E402
from ferbench.paths import config_dir  # noqa: E402
from ferbench.quiet import quiet_known_warnings  # noqa: E402
from ferbench.sweep_report import SweepRunFailed, quiet_sweep_report  # noqa: E402

USAGE = """usage: ferbench <command> [args]

commands:
  run       train and test one experiment (Hydra overrides: model=amdcnn attn=mcbam data=rafdb ...; -m sweeps)
  datasets  list every data set: where ferbench looks, whether it is there, images per class and split
  profile   parameters, multiply-adds, size, activation memory and fps of one configured model
  table     train a paper table's missing cells, then render it beside the paper's figures
  gallery   render every results-gallery table from its records and write the gallery's README.md from them
  leakage   subject / sequence / duplicate-image overlap between train and test of a split (no training)
  bench     training/evaluation images/s of ferbench beside a hand-written PyTorch loop (CSV + table)

`ferbench run --help` shows the config groups and their choices; `ferbench run --cfg job` prints the config.
"""


EXIT_RUN_FAILED = 1
"""A run failed while training (NaN/inf loss), or a sweep in which any run failed."""
EXIT_BAD_INPUT = 2
"""Config, override, data, results dir or table names are wrong; the line says which. Nothing was trained."""
# Interrupted: 128 + signal (130 SIGINT, 143 SIGTERM); rerunning the same command resumes.


def _fail(message: str) -> None:
    print(f"ferbench: error: {message}", file=sys.stderr)


def _on_sigterm(signum: int, frame: object) -> None:
    """SIGTERM (kill, SLURM's end of time, a wrapper script) becomes an exception: the run says where it stopped."""
    raise Interrupted(signum)


class _OneLine(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        kind = "warning: " if record.levelno >= logging.WARNING else ""
        return f"ferbench: {kind}{record.getMessage()}"


def _log_to_stderr() -> None:
    """ferbench's notices (a resumed fold, a damaged file set aside) as one stderr line each."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_OneLine())
    logger = logging.getLogger("ferbench")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False


LAUNCHER_PLUGINS = {
    "local": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "slurm": ("hydra_plugins.hydra_submitit_launcher", "submitit"),
    "ray_cluster": ("hydra_plugins.hydra_ray_launcher", "ray"),
}
"""hydra/launcher choice -> the plugin module it needs and the ferbench extra that installs it."""


def _parallel_job() -> int:
    """How many jobs run at once beside this one (1 under the basic launcher or outside a sweep)."""
    from hydra.core.hydra_config import HydraConfig

    launcher = HydraConfig.get().launcher
    if "BasicLauncher" in str(launcher.get("_target_", "")) or "PackedLauncher" in str(launcher.get("_target_", "")):
        return 1
    n_jobs = int(launcher.get("n_jobs", 0) or 0)
    return n_jobs if n_jobs > 0 else os.cpu_count() or 1


def _fit_to_launcher(cfg) -> None:
    """Parallel jobs share a terminal and the cores: no progress bars, and cores // jobs torch threads each.

    Neither key is part of the run id, so this changes how a run looks and shares, not what it is.
    """
    from omegaconf import open_dict

    jobs = _parallel_job()
    if jobs > 1:
        with open_dict(cfg):
            cfg.trainer.progress_bar = False
            if cfg.trainer.get("threads", 0) in (0, "auto"):
                cfg.trainer.threads = max(1, (os.cpu_count() or 1) // jobs)


def _reexecutable_argv() -> None:
    """Lightning's DDP launcher re-executes ``sys.argv`` for ranks 1..n: make it ``ferbench run <this job>``.

    Only this job's overrides, never ``-m`` and the sweep: each rank must run the one experiment rank 0 runs.
    """
    from hydra.core.hydra_config import HydraConfig

    script = Path(sys.executable).with_name("ferbench")
    script = str(script) if script.is_file() else (shutil.which("ferbench") or "ferbench")
    sys.argv = [script, "run", *HydraConfig.get().overrides.task]


def _run_task(cfg) -> float | None:
    """Hydra's task: one run. A user error prints one line; in a sweep the other runs go on.

    A sweep in which some run failed (NaN loss, bad data, ...) still runs every job, then exits 1; a run
    skipped because another process is training it is not a failure.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ferbench.errors import RunBusy
    from ferbench.run import is_primary, run
    from ferbench.terminal import print_run_summary

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    if HydraConfig.initialized():
        _fit_to_launcher(cfg)
        _reexecutable_argv()
    _TASKS_STARTED.append(1)
    try:
        record = run(cfg)
    except RunBusy as exc:
        print(f"ferbench: {exc}", file=sys.stderr)
        return None
    except FerbenchError as exc:
        _fail(str(exc))
        _remove_empty_output_dir()
        if multirun and not isinstance(exc, CannotWrite):  # a full or read-only disk fails every job alike: stop
            raise SweepRunFailed(SweepRunFailed.MARK) from None
        sys.exit(EXIT_RUN_FAILED if isinstance(exc, RunFailed) else EXIT_BAD_INPUT)
    except OSError as exc:
        _fail_on_full_disk(exc)
    if not is_primary():
        return None
    print_run_summary(record)
    return float(record.metrics["accuracy"].mean())


def _fail_on_full_disk(exc: OSError) -> None:
    """A full disk outside a run's folder (a log, a figure): one line naming the file; any other OSError raises."""
    if exc.errno not in DISK_FULL:
        raise exc
    _fail(str(cannot_write(exc, exc.filename or "a file")))
    sys.exit(EXIT_BAD_INPUT)


def _remove_empty_output_dir() -> None:
    """A run that failed before writing anything leaves no empty ``<results_dir>/hydra/<time>/`` behind (nor an
    empty ``hydra/``): a failed command's only trace is its error line."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return
    folder = Path(HydraConfig.get().runtime.output_dir)
    for path in (folder, folder.parent):
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _check_launcher(argv: list[str]) -> None:
    """An optional launcher plugin that is not installed: say which extra installs it, not a Hydra trace."""
    for arg in argv:
        if arg.startswith("hydra/launcher="):
            module, extra = LAUNCHER_PLUGINS.get(arg.split("=", 1)[1], (None, None))
            if module and importlib.util.find_spec(module) is None:
                raise FerbenchError(f"{arg} needs the {extra} launcher plugin: pip install 'ferbench[{extra}]'")


_TASKS_STARTED: list[int] = []
"""One entry per run Hydra started: a Hydra exit 1 before any is a config error (exit 2), after one a failed sweep."""

INFO_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--resolve", "--shell-completion")


def _results_dir_of(argv: list[str]) -> str | None:
    """``results_dir`` as the command line sets it (the config's default otherwise); None when swept."""
    from omegaconf import OmegaConf

    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+~").split("=", 1)[0] == "results_dir" and "=" in a]
    value = given[-1] if given else str(OmegaConf.load(config_dir() / "config.yaml").results_dir)
    return None if any(c in value for c in ",()[]{}$") else value


def _check_results_dir(argv: list[str]) -> None:
    """Hydra writes ``<results_dir>/hydra/...`` before a run starts: an unwritable one fails first, in one line."""
    results_dir = _results_dir_of(argv)
    if results_dir is None or any(a.split("=", 1)[0] in INFO_FLAGS for a in argv):
        return
    from ferbench.records.run_folder import ensure_writable

    ensure_writable(Path(results_dir))


SWEEP_SYNTAX = ("choice(", "range(", "interval(", "glob(", "sort(", "shuffle(", "tag(")


def _check_overrides(argv: list[str]) -> None:
    """Compose and validate the config once before Hydra does, so that an unknown choice or key, or a value out of
    range, is one ``ferbench: error:`` line naming the choices, the nearest key or what was expected (Hydra's own
    message is several lines without the prefix), before any run of a sweep trains. Every swept value is checked
    beside the first of the others; sweep functions and ``hydra`` overrides are left to Hydra."""
    from ferbench.config import compose_config, validate

    if any(a.split("=", 1)[0] in INFO_FLAGS for a in argv):
        return
    plain = [a for a in argv if not a.startswith("-") and not a.lstrip("+~").startswith("hydra")]
    if any(s in a for a in plain for s in SWEEP_SYNTAX):
        return
    sweep = "-m" in argv or "--multirun" in argv
    values = [a.partition("=")[2].split(",") if sweep else [a.partition("=")[2]] for a in plain]
    firsts = [f"{a.partition('=')[0]}={v[0]}" if "=" in a else a for a, v in zip(plain, values, strict=True)]
    validate(compose_config(firsts))
    for i, arg in enumerate(plain):  # each other value of a swept override, beside the others' first values
        for value in values[i][1:]:
            validate(compose_config([*firsts[:i], f"{arg.partition('=')[0]}={value}", *firsts[i + 1 :]]))


def _hydra_run(argv: list[str]) -> None:
    import hydra

    _check_launcher(argv)
    _check_overrides(argv)
    _check_results_dir(argv)
    sys.argv = ["ferbench-run", *argv]
    main_fn = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_run_task)
    try:
        with quiet_sweep_report():
            main_fn()
    except SystemExit as exc:
        if exc.code == 1 and not _TASKS_STARTED:  # Hydra refused the config or overrides: bad input
            sys.exit(EXIT_BAD_INPUT)
        raise


def _datasets(argv: list[str]) -> None:
    from ferbench.terminal import print_datasets

    parser = argparse.ArgumentParser(prog="ferbench datasets", description="list every data set ferbench knows")
    parser.add_argument(
        "--data-root", default=None, help="folder holding <name>/ per data set (default: $FERBENCH_DATA or ./data)"
    )
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. data_dirs.ckplus=/data/CK+48-parent")
    args = parser.parse_args(argv)
    print_datasets(args.data_root, args.overrides)


def _table(argv: list[str]) -> None:
    from ferbench.results.spec import find_specs
    from ferbench.tables import build_table, check_only
    from ferbench.terminal import print_table_outcome, table_progress

    parser = argparse.ArgumentParser(
        prog="ferbench table",
        description="train the missing cells of paper tables and render them (results/tables/, results/report/)",
    )
    parser.add_argument(
        "targets",
        nargs="+",
        help="all | <paper> | <paper>/<table> | path/to/table.yaml, then profile=... and overrides. "
        "profile=smoke (the default: a few epochs, synthetic where data is absent) | paper (the paper's settings) | "
        "budget (the paper's recipe with fewer epochs, folds and seeds, where the table has one) | until_flat "
        "(amdcnn/table8: the budget trained until the validation loss is flat, at most 30 epochs) | paper_literal "
        "(yoloxnano/table2: the paper's stated settings, where its `paper` profile says what it changed); "
        "--render-only renders the profile named, so name the one the records were made with",
    )
    parser.add_argument("--render-only", action="store_true", help="only render from existing run records")
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated row or column keys, or row:column cells: train only those (render all)",
    )
    parser.add_argument("--seeds", default="", help="comma-separated seeds instead of the table's own (e.g. 0)")
    parser.add_argument(
        "--plan",
        action="store_true",
        help="train nothing: print each missing run's projected CPU hours (from measured images/s) and the claims "
        "it feeds, most claims per CPU hour first",
    )
    args = parser.parse_intermixed_args(argv)
    targets = [t for t in args.targets if "=" not in t]
    assignments = [t for t in args.targets if "=" in t]
    profile = next((a.split("=", 1)[1] for a in assignments if a.startswith("profile=")), "smoke")
    extra = ["trainer.progress_bar=false", *(a for a in assignments if not a.startswith("profile="))]
    specs = [spec for target in targets or ["all"] for spec in find_specs(target, profile=profile)]
    only = [k for k in args.only.split(",") if k]
    check_only(specs, only)
    seeds = _seeds(args.seeds)
    if args.plan:
        from ferbench.terminal import print_cost_plan

        print_cost_plan(specs, profile, extra, only, seeds)
        return
    for spec in specs:
        with table_progress(spec.name) as on_progress:
            outcome = build_table(
                spec,
                profile,
                extra,
                render_only=args.render_only,
                on_progress=on_progress,
                only=only,
                seeds=seeds,
            )
        print_table_outcome(outcome)
    from ferbench.results.report import write_reports

    write_reports({spec.paper for spec in specs}, extra, profile)


def _seeds(text: str) -> list[int]:
    """``--seeds 0,1,2``; anything else is a one-line error naming what was given."""
    try:
        return [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise FerbenchError(f"--seeds takes comma-separated integers (e.g. 0,1,2), got {text!r}") from None


def _gallery(argv: list[str]) -> None:
    from ferbench.results.gallery_page import gallery_command
    from ferbench.tables import build_table

    gallery_command(argv, build_table)


def _bench(argv: list[str]) -> None:
    from ferbench.bench.cli import bench_command

    bench_command(argv)


def _profile(argv: list[str]) -> None:
    """``ferbench profile model=... attn=...``: parameters, MACs, size, activation memory, fps at batch 1."""
    import torch

    from ferbench.config import compose_config
    from ferbench.factory import build_model
    from ferbench.models.profile import layer_table, profile_report
    from ferbench.terminal import print_profile

    parser = argparse.ArgumentParser(prog="ferbench profile", description="profile one model as configured")
    parser.add_argument("overrides", nargs="*", help="config overrides: model=shufflecsp attn=cbam ...")
    parser.add_argument("--num-classes", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--layers", action="store_true", help="also one row per top-level layer (the form of paper 003's Table 1)"
    )
    args = parser.parse_args(argv)
    cfg = compose_config(args.overrides)
    model = build_model(cfg, args.num_classes)
    size, chans = cfg.model.input_size, cfg.model.in_chans
    layers = layer_table(model, size, chans) if args.layers else None
    print_profile(cfg, profile_report(model, size, chans, args.device), layers, args.device)


def _check_writable_file(path: Path, flag: str, example: str) -> None:
    """An output file's folder can be made and written, or a one-line error naming it; a folder given where a file
    is wanted (``--out results/``) is named too, before the work rather than as a traceback after it."""
    if Path(path).is_dir():
        raise FerbenchError(f"{flag} {path}: a folder, not a file; give a file's name, e.g. {Path(path) / example}")
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".{Path(path).name}.probe"
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise FerbenchError(f"cannot write {path}: {exc.strerror or exc}") from None


def _leakage(argv: list[str]) -> None:
    """``ferbench leakage data=ckplus split=holdout``: overlap figures, examples as an image grid, ``--out`` JSON."""
    import json

    from ferbench.config import compose_config
    from ferbench.leakage_scan import draw_grid, examples, scan
    from ferbench.records.atomic import write_text
    from ferbench.records.record import data_choice, id_part
    from ferbench.terminal import print_leakage

    parser = argparse.ArgumentParser(prog="ferbench leakage", description="train/test overlap of a split")
    parser.add_argument("overrides", nargs="*", help="config overrides: data=ckplus split=holdout split.ratio=0.1")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON (summed over folds)")
    parser.add_argument(
        "--grid", type=Path, default=None, help="examples PNG (default results/leakage/<data>-<split>.png)"
    )
    parser.add_argument("--examples", type=int, default=8, help="leaking test images shown in the grid")
    args = parser.parse_args(argv)
    cfg = compose_config(args.overrides)
    name = f"{data_choice(cfg)}-{id_part('split.name', cfg.split.name)}-s{cfg.seed}.png"  # never a path elsewhere
    grid = args.grid or Path(cfg.results_dir) / "leakage" / name
    for flag, target, example in (("--out", args.out, "leakage.json"), ("--grid", grid, name)):  # before the work
        if target is not None:
            _check_writable_file(target, flag, example)
    found = scan(cfg)
    drawn = draw_grid(found, examples(found, args.examples), grid)
    if args.out:
        write_text(args.out, json.dumps(found.figures, indent=1))
    print_leakage(found.figures, drawn, args.out)


COMMANDS = {
    "run": _hydra_run,
    "datasets": _datasets,
    "table": _table,
    "gallery": _gallery,
    "bench": _bench,
    "profile": _profile,
    "leakage": _leakage,
}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"unknown command '{command}'; choose from: {', '.join(COMMANDS)}")
        sys.exit(EXIT_BAD_INPUT)
    _log_to_stderr()
    quiet_known_warnings()
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        COMMANDS[command](rest)
    except FerbenchError as exc:
        _fail(str(exc))
        sys.exit(EXIT_RUN_FAILED if isinstance(exc, RunFailed) else EXIT_BAD_INPUT)
    except OSError as exc:
        _fail_on_full_disk(exc)
    except KeyboardInterrupt:
        _interrupted(Interrupted(signal.SIGINT))
    except Interrupted as exc:
        _interrupted(exc)


def _interrupted(exc: Interrupted) -> None:
    print(f"ferbench: {exc}", file=sys.stderr)
    sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
