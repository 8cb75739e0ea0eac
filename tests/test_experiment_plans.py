"""Every experiment file plans: each cell's status holds what it promises."""

from __future__ import annotations

from pathlib import Path

from test_tables import _experiment_specs


def _status_holds(cell) -> bool:
    """What a planned cell's status promises: a run has one config (and id) per seed, none on synthetic faces (the
    paper profile never swaps them in for absent data: that is "no data", with where it was looked for); a cited
    cell is the YAML's citation; "paper only" has nothing to run. Only a run has configs."""
    if bool(cell.configs) != (cell.status == "run") or cell.failure:
        return False
    if cell.status == "run":
        return len(cell.run_ids) == len(cell.configs) and all(c.data.name != "synthetic" for c in cell.configs)
    if cell.status == "no data":
        return bool(cell.missing) and not Path(cell.missing).exists()
    if cell.status == "cited":
        return bool(cell.row.cited)
    return cell.status == "paper only" and not cell.row.cited and not cell.row.overrides


def test_every_experiment_file_parses_and_plans():
    from ferbench.tables import plan

    specs = _experiment_specs()
    assert len(specs) >= 23  # every paper's tables: a glob that found nothing would pass the loop below
    for spec in specs:
        assert spec.kind in ("layers", "counts") or {"paper", "smoke"} <= set(spec.profiles), spec.name
        assert set(spec.profiles) <= {"paper", "smoke", "budget", "until_flat", "converge", "paper_literal"}, spec.name
        for capped in set(spec.profiles) - {"paper", "smoke"}:  # the paper's recipe, shorter: never more epochs
            epochs = [int(o.split("=")[1]) for o in spec.profiles[capped] if o.startswith("trainer.max_epochs=")]
            assert epochs and epochs[-1] <= (spec.paper_epochs or 0), (spec.name, capped, epochs)
            plan(spec, capped, ["results_dir=/tmp/ferbench-plan-check"])
        cells = plan(spec, "paper", ["results_dir=/tmp/ferbench-plan-check"])
        assert spec.kind in ("layers", "counts") or cells, spec.name
        for cell in cells:
            assert _status_holds(cell), (spec.name, cell.key, cell.status)
        assert spec.kind != "runs" or {r.key for r in spec.rows}, spec.name
