"""``ferbench bench``'s command line: the arguments, which benchmark they start, and the printed table."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ferbench.errors import FerbenchError


def bench_command(argv: list[str]) -> None:
    """``ferbench bench ...``: parse, time what was asked, print the table and where its CSV went."""
    from datetime import datetime

    from ferbench import bench
    from ferbench.bench.options import OPTIONS

    parser = argparse.ArgumentParser(
        prog="ferbench bench",
        description="images/s of ferbench's training and evaluation beside a plain PyTorch loop, per paper model",
    )
    parser.add_argument("--cases", default=None, help="comma-separated models (default: the registered paper models)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per measurement (default: per case)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before them (default: per case)")
    parser.add_argument("--batch-size", type=int, default=None, help="images per batch (default 64; 16 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="alternating timed windows per path (default 3)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--quick", action="store_true", help="1 warm-up + 3 steps at batch 16: a smoke test")
    parser.add_argument(
        "--concurrent", default=None, help="e.g. 1,2,4: that many training processes at once; total images/s"
    )
    parser.add_argument(
        "--pack", default=None, help="e.g. 1,8,32: K models trained as one pack against the same K one at a time"
    )
    parser.add_argument(
        "--options",
        nargs="?",
        const=",".join(OPTIONS),
        default=None,
        help=f"time speed options against fp32 eager per case (default all: {','.join(OPTIONS)})",
    )
    parser.add_argument(
        "--busy", type=int, default=0, help="with --options: that many CPU-bound processes run beside the timing"
    )
    parser.add_argument("--out", type=Path, default=None, help="CSV path (default results/bench/<timestamp>.csv)")
    parser.add_argument("overrides", nargs="*", help="config overrides for every case, e.g. trainer=fast_gpu")
    for hidden in ("--child-json", "--barrier", "--parties"):  # one process of a --concurrent measurement
        parser.add_argument(hidden, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    cases = [c for c in args.cases.split(",") if c] if args.cases else None
    if args.child_json:
        schedule = bench.Schedule(args.steps, args.warmup)
        bench.child_main(
            cases[0],
            args.device,
            args.batch_size,
            schedule,
            args.overrides,
            Path(args.child_json),
            Path(args.barrier),
            int(args.parties),
        )
        return
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    common = dict(
        cases=cases,
        steps=args.steps,
        batch_size=args.batch_size,
        device=args.device,
        quick=args.quick,
        overrides=args.overrides,
        on_case=lambda name: print(f"ferbench bench: {name} ...", file=sys.stderr),
    )
    if args.options:
        out = args.out or Path("results/bench") / f"{stamp}-options.csv"
        table = _bench_options(args, cases or ["amdcnn", "shufflecsp"], out)
        columns = ["case", "option", "images_per_s", "speedup", "threads", "batch_size", "busy", "note"]
    elif args.pack:
        packs = [int(n) for n in args.pack.split(",") if n]
        out = args.out or Path("results/bench") / f"{stamp}-pack.csv"
        table = bench.run_pack_benchmark(packs, repeats=args.repeats, out=out, **common)
        columns = ["case", "pack", "batch_size", "packed_images_per_s", "solo_images_per_s", "pack_speedup", "mfu"]
    elif args.concurrent:
        counts = [int(n) for n in args.concurrent.split(",") if n]
        out = args.out or Path("results/bench") / f"{stamp}-concurrent.csv"
        table = bench.run_concurrent(counts=counts, out=out, **common)
        columns = [
            "case",
            "concurrent",
            "threads_per_process",
            "total_ips",
            "aggregate_ips",
            "per_process_ips_min",
            "speedup_vs_1",
            "peak_mb_per_process_max",
        ]
    else:
        out = args.out or Path("results/bench") / f"{stamp}.csv"
        table = bench.run_benchmark(warmup=args.warmup, repeats=args.repeats, out=out, **common)
        columns = [
            "case",
            "input_size",
            "in_chans",
            "ferbench_train_ips",
            "plain_train_ips",
            "train_ratio",
            "train_overhead_ms_per_step",
            "ferbench_eval_ips",
            "plain_eval_ips",
            "eval_ratio",
            "data_ips",
            "data_to_train_ratio",
            "ferbench_peak_mb",
            "plain_peak_mb",
        ]
    print_bench_table(table, columns, out)


def _bench_options(args: argparse.Namespace, cases: list[str], out: Path):
    """``--options``: each case's speed options against fp32 eager (``ferbench.bench.options``)."""
    import pandas as pd

    from ferbench import bench
    from ferbench.bench import options as bench_options
    from ferbench.bench.options import OPTIONS
    from ferbench.training.process import configure_cpu

    device = bench.resolve_device(args.device)
    options = [o for o in args.options.split(",") if o]
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise FerbenchError(f"--options: unknown {unknown}; choose from {', '.join(OPTIONS)}")
    frames = []
    with bench_options.busy_processes(args.busy):
        for case in cases:
            print(f"ferbench bench: {case} speed options ...", file=sys.stderr)
            cfg = bench.compose_case(case, args.batch_size or 32, device, args.overrides)
            configure_cpu(cfg.trainer)
            results = bench_options.bench_options(
                case,
                cfg,
                device,
                options,
                steps=args.steps or 10,
                warmup=args.warmup or 3,
                windows=args.repeats or 5,
                progress=lambda line: print(f"ferbench bench: {line}", file=sys.stderr),
            )
            frames.append(bench_options.results_frame(results).assign(busy=args.busy))
    table = pd.concat(frames, ignore_index=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    return table


def _bench_title(first) -> str:
    return (
        f"ferbench bench — {first['device_name']} ({first['device']}), torch {first['torch_version']}, "
        f"{first['threads']} threads, {first['precision']}"
        f"{', channels_last' if first['channels_last'] else ''}{', compile' if first['compile'] else ''}"
        f"{', gpu_augment' if first['gpu_augment'] else ''}  (images/s; memory MiB, {first.get('peak_mem_kind', '')})"
    )


def print_bench_table(table, columns: list[str], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    first = table.iloc[0]
    if "device_name" not in table.columns:  # --options: its rows say what each measured
        title = f"ferbench bench --options — {first['threads']} threads, batch {first['batch_size']} (images/s)"
    else:
        title = _bench_title(first)
    view = Table(title=title, title_justify="left")

    for column in columns:
        view.add_column(column.replace("_ips", " img/s").replace("_", " "), justify="right")
    for _, row in table.iterrows():
        view.add_row(*(_cell(row[c]) for c in columns))
    Console(width=None if sys.stdout.isatty() else 200).print(view)
    print(f"written: {out}")


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 10 else f"{value:,.0f}"
    return str(value)
