"""Command line: parses and dispatches; the work is done by functions the tests call directly.

    ferbench run [group=choice ...] [key=value ...] [-m]   one run, or a Hydra sweep with -m
    ferbench datasets [--data-root DIR]                    every data set: where, present, counts
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


COMMANDS = {"run": _hydra_run, "datasets": _datasets}


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
