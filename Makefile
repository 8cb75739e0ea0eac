# ferbench — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: help install install-loggers test test-e2e test-all lint format run bench gpu-check ablations tables smoke-tables gallery clean

help: ## show this help
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-12s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev,joblib]"
	touch $(STAMP)

install: $(STAMP) ## make .venv and install ferbench with its dev extras (about 3 minutes)

install-loggers: $(STAMP) ## add the optional logger packages (tensorboard, mlflow-skinny, wandb) for logger=...
	$(BIN)/pip install --quiet -e ".[dev,joblib,loggers]"

test: $(STAMP) ## lint, then the fast tests (the dev loop, a few minutes); installs first if needed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests
	$(BIN)/pytest -m "not slow and not e2e" -q --durations=25

test-e2e: $(STAMP) ## one table per paper, smoke profile, end to end (CI runs this after `make test`)
	$(BIN)/pytest -m "e2e and not slow" -q --durations=5

test-all: $(STAMP) ## every test, real-data and slow ones included (skips what has no data)
	$(BIN)/pytest -q

lint: $(STAMP) ## ruff (lint and format check)
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

format: $(STAMP) ## ruff format + import sort
	$(BIN)/ruff check --fix src tests
	$(BIN)/ruff format src tests

run: $(STAMP) ## the default run: simplecnn on the embedded synthetic faces
	$(BIN)/ferbench run

bench: $(STAMP) ## speed: ferbench vs a plain PyTorch loop per paper model (CSV in results/bench/; ARGS="trainer=fast_gpu")
	$(BIN)/ferbench bench $(ARGS)

GPU_SPEED := trainer.precision=bf16-mixed trainer.matmul_precision=high trainer.gpu_augment=true trainer.cudnn_benchmark=true

gpu-check: $(STAMP) ## on a CUDA machine (minutes): packed = solo on the GPU, then packed vs solo images/s and MFU
	nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
	$(BIN)/pytest -q -m gpu tests/test_packed.py
	$(BIN)/ferbench bench --device cuda --cases amdcnn --batch-size 32 --steps 60 --pack 1,8,32,64 \
		--out results/bench/gpu-check-amdcnn.csv $(GPU_SPEED)
	$(BIN)/ferbench bench --device cuda --cases shufflecsp --batch-size 32 --steps 60 --pack 1,8,32,64 \
		--out results/bench/gpu-check-shufflecsp.csv $(GPU_SPEED)

ablations: $(STAMP) ## every table of every paper at the papers' settings: trains missing cells, renders all
	$(BIN)/ferbench table all profile=paper $(ARGS)

smoke-tables: $(STAMP) ## every table, smoke profile (a few epochs on subsets; synthetic where data is absent)
	$(BIN)/ferbench table all profile=smoke $(ARGS)

tables: $(STAMP) ## only render every table from existing run records (trains nothing)
	$(BIN)/ferbench table all profile=paper --render-only $(ARGS)

GALLERY_RUNS ?= results/gallery-runs
GALLERY_DATA ?= ../shared/data
GALLERY_TABLES ?= amdcnn/table8:ckplus,ckplus_subject,baseline:fer2013,mcbam_3ac:fer2013 \
	lightvgg/table3:base:ckplus,csa:ckplus shufflecsp/table2:base:fer2013,sa_base_g4_ca:fer2013 shufflecsp/table3:ours:fer2013
gallery: $(STAMP) ## the budget gallery (real data in GALLERY_DATA): train, copy records, then `ferbench gallery`
	@for t in $(GALLERY_TABLES); do \
		FERBENCH_DATA=$(GALLERY_DATA) $(BIN)/ferbench table $${t%%:*} profile=budget --only $${t#*:} \
			data_dirs.ckplus=$(GALLERY_DATA)/ckplus48 results_dir=$(GALLERY_RUNS) trainer.progress_bar=false || exit $$?; \
	done
	FERBENCH_DATA=$(GALLERY_DATA) $(BIN)/python -m ferbench.results.gallery $(GALLERY_RUNS) results/gallery --reidentify
	$(BIN)/ferbench gallery data_root=$(GALLERY_DATA) data_dirs.ckplus=$(GALLERY_DATA)/ckplus48

clean: ## remove run outputs (results/), keep the venv
	rm -rf results/runs results/hydra results/cache
