"""Command line: parses and dispatches; the work is done by functions the tests call directly.

    ferbench run [group=choice ...] [key=value ...] [-m]   one run, or a Hydra sweep with -m
    ferbench datasets [--data-root DIR]                    every data set: where, present, counts
    ferbench table <paper>/<table>|<paper>|all [profile=smoke|paper] [--render-only] [key=value ...]
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from ferbench.errors import FerbenchError  # noqa: E402
from ferbench.paths import config_dir  # noqa: E402

USAGE = """usage: ferbench <command> [args]

commands:
  run       train and test one experiment (Hydra overrides: model=amdcnn attn=mcbam data=rafdb ...; -m sweeps)
  datasets  list every data set: where ferbench looks, whether it is there, images per class and split
  table     train a paper table's missing cells, then render it beside the paper's figures

`ferbench run --help` shows the config groups and their choices; `ferbench run --cfg job` prints the config.
"""


def _fail(message: str) -> None:
    print(f"ferbench: error: {message}", file=sys.stderr)


def _run_task(cfg) -> float | None:
    """Hydra's task: one run. A user error prints one line; in a sweep the other runs go on."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from ferbench.report import print_run_summary
    from ferbench.run import run

    multirun = HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        record = run(cfg)
    except FerbenchError as exc:
        _fail(str(exc))
        if multirun:
            return None
        sys.exit(2)
    print_run_summary(record)
    return float(record.metrics["accuracy"].mean())


def _hydra_run(argv: list[str]) -> None:
    import hydra

    sys.argv = ["ferbench-run", *argv]
    main_fn = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(_run_task)
    main_fn()


def _datasets(argv: list[str]) -> None:
    from ferbench.report import print_datasets

    parser = argparse.ArgumentParser(prog="ferbench datasets", description="list every data set ferbench knows")
    parser.add_argument(
        "--data-root", default=None, help="folder holding <name>/ per data set (default: $FERBENCH_DATA or ./data)"
    )
    args = parser.parse_args(argv)
    print_datasets(args.data_root)


def _table(argv: list[str]) -> None:
    from ferbench.report import print_table_outcome, table_progress
    from ferbench.results.spec import find_specs
    from ferbench.tables import build_table

    parser = argparse.ArgumentParser(
        prog="ferbench table",
        description="train the missing cells of paper tables and render them (results/tables/, results/report/)",
    )
    parser.add_argument("targets", nargs="+", help="all | <paper> | <paper>/<table>, then profile=... and overrides")
    parser.add_argument("--render-only", action="store_true", help="only render from existing run records")
    args = parser.parse_args(argv)
    targets = [t for t in args.targets if "=" not in t]
    assignments = [t for t in args.targets if "=" in t]
    profile = next((a.split("=", 1)[1] for a in assignments if a.startswith("profile=")), "smoke")
    extra = ["trainer.progress_bar=false", *(a for a in assignments if not a.startswith("profile="))]
    specs = [spec for target in targets or ["all"] for spec in find_specs(target)]
    for spec in specs:
        with table_progress(spec.name) as on_progress:
            outcome = build_table(spec, profile, extra, render_only=args.render_only, on_progress=on_progress)
        print_table_outcome(outcome)
    from ferbench.results.report import write_reports

    write_reports({spec.paper for spec in specs}, extra)


COMMANDS = {"run": _hydra_run, "datasets": _datasets, "table": _table}


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        _fail(f"unknown command '{command}'; choose from: {', '.join(COMMANDS)}")
        sys.exit(2)
    try:
        COMMANDS[command](rest)
    except FerbenchError as exc:
        _fail(str(exc))
        sys.exit(2)


if __name__ == "__main__":
    main()
