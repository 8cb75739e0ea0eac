"""Tiny data sets written in each published layout, for the loader tests (real PNG/JPG/TIFF files)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
"""The real data copies beside the repository (CI clones the repo next to shared/)."""


def face(seed: int, size: int = 48) -> np.ndarray:
    """A distinct grey image per seed (random blobs, so perceptual hashes differ)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (6, 6), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(path.suffix, image)
    assert ok, path
    path.write_bytes(data.tobytes())
    return path


FER_CSV_CODES = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def fer2013_csv(root: Path, rows: list[tuple[int, str]]) -> Path:
    """``fer2013.csv`` with one row per (emotion code, Usage); pixels from ``face(i)``."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["emotion,pixels,Usage"]
    for i, (code, usage) in enumerate(rows):
        lines.append(f"{code},{' '.join(map(str, face(i).ravel()))},{usage}")
    path = root / "fer2013.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def fer2013_folders(root: Path) -> dict[str, int]:
    """train/<class>/Training_*.jpg, test/<class>/{PublicTest,PrivateTest}_*.jpg; returns counts per split."""
    n = 0
    for k, cls in enumerate(["angry", "disgust", "fear", "happy", "neutral", "sad", "surprise"]):
        for j in range(2):
            write(root / "train" / cls / f"Training_{k}{j}.jpg", face(n := n + 1))
        write(root / "test" / cls / f"PublicTest_{k}.jpg", face(n := n + 1))
        write(root / "test" / cls / f"PrivateTest_{k}.jpg", face(n := n + 1))
    return {"train": 14, "val": 7, "test": 7}


FERPLUS_VOTES = [
    # (usage, name, votes: neutral happiness surprise sadness anger disgust fear contempt unknown NF), expected
    ("Training", "fer0000000.png", [4, 0, 0, 1, 3, 2, 0, 0, 0, 0], "no_majority"),  # 4 of 9 after dropping 1s
    ("Training", "fer0000001.png", [6, 0, 1, 1, 0, 0, 0, 0, 2, 0], "neutral"),
    ("Training", "fer0000002.png", [0, 10, 0, 0, 0, 0, 0, 0, 0, 0], "happiness"),
    ("Training", "", [0, 0, 0, 0, 0, 0, 0, 0, 0, 10], "no_image_name"),
    ("Training", "fer0000004.png", [5, 5, 0, 0, 0, 0, 0, 0, 0, 0], "no_majority"),  # a tie
    ("Training", "fer0000005.png", [0, 0, 0, 0, 0, 0, 0, 0, 7, 3], "majority_unknown"),
    ("PublicTest", "fer0000006.png", [0, 0, 0, 0, 0, 0, 0, 0, 2, 8], "majority_not_face"),
    ("PublicTest", "fer0000007.png", [0, 0, 0, 0, 0, 0, 0, 6, 0, 4], "contempt"),
    ("PrivateTest", "fer0000008.png", [4, 0, 0, 0, 0, 3, 1, 0, 1, 0], "neutral"),  # the real set's 9-vote row
    ("PrivateTest", "fer0000002.png", [0, 0, 9, 0, 0, 0, 0, 0, 0, 1], "duplicate_name"),
    ("PrivateTest", "fer0000010.png", [0, 0, 0, 0, 2, 0, 8, 0, 0, 0], "fear"),
]


def ferplus_csv(root: Path) -> Path:
    """fer2013new.csv + a row-aligned fer2013.csv."""
    root.mkdir(parents=True, exist_ok=True)
    lines = ["Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"]
    lines += [f"{u},{n},{','.join(map(str, v))}" for u, n, v, _ in FERPLUS_VOTES]
    (root / "fer2013new.csv").write_text("\n".join(lines) + "\n")
    fer2013_csv(root, [(0, u) for u, *_ in FERPLUS_VOTES])
    return root


def ferplus_folders(root: Path) -> Path:
    """FER2013Train|Valid|Test/ with fer*.png and label.csv, as FERPlus's generate_training_data.py writes."""
    folders = {"Training": "FER2013Train", "PublicTest": "FER2013Valid", "PrivateTest": "FER2013Test"}
    labels: dict[str, list[str]] = {f: [] for f in folders.values()}
    seen = set()
    for i, (usage, name, votes, _) in enumerate(FERPLUS_VOTES):
        if not name or name in seen:
            continue
        seen.add(name)
        write(root / folders[usage] / name, face(i))
        labels[folders[usage]].append(f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes))}')
    for folder, rows in labels.items():
        (root / folder / "label.csv").write_text("\n".join(rows) + "\n")
    return root


def rafdb(root: Path) -> Path:
    lines = ["train_00001.jpg 5", "train_00002.jpg 1", "test_0001.jpg 7", "test_0002.jpg 4"]
    for i, line in enumerate(lines):
        stem = line.split(".")[0]
        write(root / "Image" / "aligned" / f"{stem}_aligned.jpg", cv2.cvtColor(face(i, 100), cv2.COLOR_GRAY2BGR))
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text("\n".join(lines) + "\n")
    return root


def ckplus_original(root: Path) -> Path:
    """2 subjects, 3 sequences (one unlabelled), 5 frames each."""
    sequences = {("S005", "001"): 3, ("S005", "002"): None, ("S010", "004"): 7}
    for n, ((subject, seq), code) in enumerate(sequences.items()):
        for frame in range(1, 6):
            write(
                root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{frame:08d}.png", face(10 * n + frame)
            )
        emotion_dir = root / "Emotion" / subject / seq
        emotion_dir.mkdir(parents=True, exist_ok=True)
        if code is not None:
            (emotion_dir / f"{subject}_{seq}_00000005_emotion.txt").write_text(f"   {code:.7e}\n")
    return root


def ck48(root: Path) -> Path:
    files = {
        "anger": ["S010_004_00000017.png", "S010_004_00000018.png", "S010_004_00000019.png"],
        "contempt": ["S011_001_00000010.png", "S011_001_00000011.png", "S011_001_00000012.png"],
        "surprise": ["S010_002_00000008.png", "S010_002_00000009.png", "S010_002_00000010.png"],
    }
    n = 0
    for cls, names in files.items():
        for name in names:
            write(root / "CK+48" / cls / name, face(n := n + 1))
    for k, cls in enumerate(["disgust", "fear", "happy", "sadness"]):
        write(root / "CK+48" / cls / f"S020_{k:03d}_00000001.png", face(n := n + 1))
    return root


CK48_EXPRESSIONS = {"anger": "angry", "contempt": "neutral", "disgust": "disgust", "fear": "fear",
                    "happy": "happy", "sadness": "sad", "surprise": "surprise"}  # fmt: skip


def ck48_drawn(root: Path, subjects: int = 6, seed: int = 0) -> Path:
    """CK+48's layout with synthetic faces the Haar cascade finds (``ck48``'s blobs it does not): subject k posed
    k % 3 + 1 expressions, 3 frames each, so subjects differ in how many faces they have."""
    from ferbench.data.synthetic import EXPRESSIONS, draw_face

    rng = np.random.default_rng(seed)
    classes = list(CK48_EXPRESSIONS)
    for k in range(subjects):
        for q in range(k % 3 + 1):
            cls = classes[(k + q) % len(classes)]
            for frame in range(3):
                image = draw_face(EXPRESSIONS[CK48_EXPRESSIONS[cls]], 48, rng, difficulty=0.5)
                write(root / "CK+48" / cls / f"S{k + 100:03d}_{q + 1:03d}_{frame + 10:08d}.png", image)
    return root


def jaffe(root: Path) -> Path:
    names = ["KA.AN1.39.tiff", "KA.HA2.30.tiff", "KL.SU1.160.tiff", "KL.NE1.155.tiff", "YM.DI3.66.tiff",
             "YM.FE1.67.tiff", "NA.SA2.210.tiff"]  # fmt: skip
    for i, name in enumerate(names):
        write(root / name, face(i, 64))
    (root / "README").write_text("JAFFE\n")
    return root


def rafd(root: Path) -> Path:
    names = [
        "Rafd090_01_Caucasian_female_angry_frontal.jpg",
        "Rafd090_01_Caucasian_female_happy_left.jpg",
        "Rafd045_02_Moroccan_male_contemptuous_right.jpg",
        "Rafd000_02_Moroccan_male_surprised_frontal.jpg",
        "Rafd180_03_Caucasian_female_neutral_frontal.jpg",
    ]
    for i, name in enumerate(names):
        write(root / name, cv2.cvtColor(face(i, 80), cv2.COLOR_GRAY2BGR))
    return root


def pasted_faces(
    root: Path, classes: tuple[str, ...], per_class: int, size: int = 96, seed: int = 0, difficulty: float = 0.3
) -> Path:
    """Synthetic faces (``data.synthetic``) pasted at random places and sizes on noisy backgrounds, in the folder
    layout ``<root>/images/<class>/<class>_<k>.png``, with their boxes in ``<root>/boxes.csv`` (path,x1,y1,x2,y2).
    Returns the CSV's path."""
    from ferbench.data.synthetic import EXPRESSIONS, draw_face

    rng = np.random.default_rng(seed)
    lines = ["path,x1,y1,x2,y2"]
    for cls in classes:
        for k in range(per_class):
            canvas = rng.normal(90, 30, (size, size)).clip(0, 255).astype(np.uint8)
            side = int(rng.integers(size // 2, size * 3 // 4))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            canvas[y : y + side, x : x + side] = draw_face(EXPRESSIONS[cls], side, rng, difficulty)
            write(root / "images" / cls / f"{cls}_{k}.png", canvas)
            lines.append(f"{cls}/{cls}_{k}.png,{x},{y},{x + side},{y + side}")
    (root / "boxes.csv").write_text("\n".join(lines) + "\n")
    return root / "boxes.csv"


JAFFE_CODES = ("AN", "DI", "FE", "HA", "NE", "SA", "SU")
JAFFE_EXPRESSIONS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")


def jaffe_faces(root: Path, per_class: int = 6, size: int = 256, seed: int = 0) -> dict[str, tuple[int, ...]]:
    """JAFFE in its published layout (flat ``KA.AN1.39.tiff``: subject . expression + index . id), each image a
    synthetic face of that expression pasted on a grey background; every third file palette-mode, as some of the
    real set's are. Returns each file's pasted box (x1, y1, x2, y2)."""
    from PIL import Image

    from ferbench.data.synthetic import EXPRESSIONS, draw_face

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subjects = ("KA", "KL", "KM", "KR", "MK", "NA", "NM", "TM", "UY", "YM")
    n, boxes = 0, {}
    for code, expression in zip(JAFFE_CODES, JAFFE_EXPRESSIONS, strict=True):
        for k in range(per_class):
            canvas = np.full((size, size), int(rng.integers(80, 160)), dtype=np.uint8)
            side = int(rng.integers(size // 2, size * 3 // 4))
            x, y = (int(v) for v in rng.integers(0, size - side, 2))
            canvas[y : y + side, x : x + side] = draw_face(EXPRESSIONS[expression], side, rng, difficulty=0.5)
            image = Image.fromarray(canvas)
            if n % 3 == 0:
                image = image.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
            name = f"{subjects[n % len(subjects)]}.{code}{k + 1}.{n + 1}.tiff"
            image.save(root / name)
            boxes[name] = (x, y, x + side, y + side)
            n += 1
    return boxes
