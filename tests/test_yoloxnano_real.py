"""yoloxnano learns real expressions (issue 22): both forms trained with Table 2's `paper` profile on real faces.

JAFFE is not held here, so its stand-in is CK+48's real faces pasted at known boxes (``data=pasted_ckplus``) and a
JAFFE-sized training side (a quarter of a stratified 80/20 hold-out: 177 training and 79 validation faces; 197
test faces, none of them trained on). The detector's faces take 50-70% of a textured canvas, as JAFFE's face does
of its 256x256 image; the classifier form's fill 90-100% of a plain one (a whole-image classifier is meant for
faces that fill the image; on the detector's canvases it learned nothing in 30 epochs, where simplecnn reached
0.42). The budget is shorter than the table's: 128 px, and 30 of its 100 epochs for the detector, 60 for the
classifier form (the last 15 without mosaic and mix-up, as the profile's), 3-7 minutes per form on one CPU thread.
``simplecnn`` on the same faces and split (30 epochs, Adam 1e-3, batch 4) is the yardstick. Measured values are in
each test's docstring; the thresholds leave room for another CPU's arithmetic.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import SHARED_DATA
from ferbench.config import compose_config
from ferbench.paths import experiments_dir
from ferbench.results.spec import load_spec
from ferbench.run import run
from ferbench.tables import drop_superseded

pytestmark = pytest.mark.slow

CHANCE = 1 / 7
MARGIN = 0.2
"""How far under simplecnn on the same faces a form may stay (measured: the detector +0.16 above it, the
classifier form 0.03 under it)."""
BUDGET = ["model.input_size=128", "data.options.canvas=128"]
DETECTOR_FACES = ["data.options.min_scale=0.5", "data.options.max_scale=0.7", "data.options.background=texture"]
CLASSIFIER_FACES = ["data.options.min_scale=0.9", "data.options.max_scale=1.0", "data.options.background=plain"]


def trained(tmp: Path, faces: list[str], epochs: int, *overrides: str):
    """The test metrics of one run of ``overrides`` on pasted real faces (``faces``), records under ``tmp``;
    this module's data, split and budget replace the overrides' own (as a `ferbench table` command line does)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not present at {SHARED_DATA}")
    setting = [
        f"results_dir={tmp / 'results'}",
        f"cache_dir={tmp / 'cache'}",
        "data=pasted_ckplus",
        f"data_dirs.ckplus={SHARED_DATA / 'ckplus48'}",
        *faces,
        "split=holdout",
        "split.ratio=0.2",
        "trainer.limit_train_fraction=0.25",
        "trainer.threads=1",
        "trainer.progress_bar=false",
        f"trainer.max_epochs={epochs}",
        *BUDGET,
    ]
    return run(compose_config([*drop_superseded(overrides, setting), *setting])).metrics.iloc[0]


def table2(row: str) -> list[str]:
    """Table 2's base, the row's overrides and its `paper` profile: the recipe the table trains (its epochs then
    capped by ``BUDGET``)."""
    spec = load_spec(experiments_dir() / "yoloxnano" / "table2.yaml")
    (chosen,) = [r for r in spec.rows if r.key == row]
    return [*spec.base, *spec.profile_overrides("paper"), *spec.overrides, *chosen.overrides]


def simplecnn(tmp: Path, faces: list[str]) -> float:
    """simplecnn's test accuracy on the same faces and split, 30 epochs."""
    row = trained(
        tmp, faces, 30, "model=simplecnn", "optim.lr=1e-3", "trainer.batch_size=4", "trainer.early_stopping_patience=0"
    )
    return float(row["accuracy"])


def test_the_detector_learns_real_expressions_at_table2s_recipe(tmp_path: Path) -> None:
    """Measured (Xeon, one thread, 30 epochs, 172 s): mAP@0.5 0.533, expression accuracy 0.584 (recall 0.44,
    F1 0.37); with channels_last, otherwise alike, 0.354 / 0.558. simplecnn on the same canvases 0.421-0.437 (on
    the 48-px crops of the same faces 0.878). The whole test: 394 s."""
    row = trained(tmp_path / "det", DETECTOR_FACES, 30, *table2("cbam"))
    yardstick = simplecnn(tmp_path / "simple", DETECTOR_FACES)
    assert row["map50"] >= 0.2, row.to_dict()  # chance: ~0.02 (7 classes, few boxes scored right)
    assert row["accuracy"] >= max(2 * CHANCE, yardstick - MARGIN), (row.to_dict(), yardstick)
    # confident, not only ranked right: on real JAFFE a 0.47 mAP came with no detection at score >= 0.5 (issue 31)
    assert row["score_threshold"] == 0.5, row.to_dict()
    assert row["recall"] >= 0.2 and row["f1"] >= 0.15, row.to_dict()  # measured 0.44 / 0.37


def test_the_classifier_form_learns_real_expressions_at_table2s_recipe(tmp_path: Path) -> None:
    """The classifier form learns slowly from scratch under the paper's augmentation (vertical flips, crops, shear,
    mix-up), hence 60 epochs. Measured (Xeon, one thread): accuracy 0.492 (F1 0.26) at 60 epochs (174 s); 0.198
    at 30 (validation accuracy rising from epoch ~20) and 0.609 at the table's 100 (501 s). simplecnn on the same
    faces: 0.523-0.584. The whole test: 310 s."""
    row = trained(tmp_path / "cls", CLASSIFIER_FACES, 60, *table2("cls_cbam"))
    yardstick = simplecnn(tmp_path / "simple", CLASSIFIER_FACES)
    assert row["accuracy"] >= max(2 * CHANCE, yardstick - MARGIN), (row.to_dict(), yardstick)
