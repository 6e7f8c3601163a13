# gradnorm-repro. `make help` lists the targets; the README's first screen shows the two that matter.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install test lint reproduce-toy reproduce-toy-all reproduce-toy-sensitivity reproduce-toy-methods reproduce-toy-variants reproduce-multimnist report bench gpu-check smoke-nyuv2 clean

help: ## list the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  %-20s %s\n", $$1, $$2}'

# The suite with its dev tools; the exact torch/torchvision pair from constraints.txt (pyproject.toml has ranges).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[suite,dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the suite (torch 2.14.1, constraints.txt) with its dev tools

test: $(STAMP) ## run the test suite, one process per core (pytest-xdist; installs first if needed)
	$(PY) -m pytest -q -n auto --maxschedchunk 1

lint: $(STAMP) ## ruff
	$(VENV)/bin/ruff check gradnorm scripts experiments tests run.py

reproduce-toy: $(STAMP) ## the toy reproduction (paper Figure 2; 30 runs, ~11 min + install): sweep, then results/toy/
	$(PY) scripts/reproduce.py toy

bench: $(STAMP) ## step time and memory of every balancer vs equal weights (~30 min on 2 cores) -> results/bench/ (BENCH_ARGS="--quick")
	$(PY) scripts/bench.py $(BENCH_ARGS)

gpu-check: $(STAMP) ## on a CUDA machine (< 8 min): cuda tests, backbone step times, 200 CLI steps -> results/bench/gpu/
	$(PY) scripts/gpu_check.py $(GPU_CHECK_ARGS)

# NYUv2 on generated data (docs/nyuv2.md): the whole Table 1 experiment (3 backbones x single-task x3, equal,
# uncertainty, GradNorm, GradNorm static, and the 8 later methods of docs/methods.md) and Figure 3, seed 0 only (the experiments run 3), 2 CPU steps per run at 32x48, then its tables and figure.
# One thread per process: faster at this size. No checkpoints; the rest as a real run.
SMOKE_NYUV2_DATA := data/fake_nyuv2
SMOKE_NYUV2_OUT  := outputs/smoke-nyuv2
SMOKE_NYUV2_ARGS := seed=0 dataset.root=$(SMOKE_NYUV2_DATA) dataset.num_workers=0 trainer.device=cpu trainer.max_steps=2 \
  trainer.batch_size=2 trainer.eval_every=2 trainer.eval_batch_size=4 trainer.progress=false logger=none \
  --runs-dir $(SMOKE_NYUV2_OUT)/runs --out $(SMOKE_NYUV2_OUT)/results
smoke-nyuv2: $(STAMP) ## NYUv2 pipeline on fake data: Table 1 and Figure 3 sweeps (3 backbones), tables, ~4 min on 2 CPU cores
	$(PY) scripts/make_fake_nyuv2.py $(SMOKE_NYUV2_DATA) --n-train 8 --n-val 4 --height 32 --width 48 --overwrite
	rm -rf $(SMOKE_NYUV2_OUT)
	OMP_NUM_THREADS=1 $(PY) scripts/reproduce.py table1 $(SMOKE_NYUV2_ARGS)
	$(PY) scripts/reproduce.py figure3 --report-only $(SMOKE_NYUV2_ARGS)
	$(PY) -c "import json, pathlib, sys; \
	runs = {str(p.parent): json.loads(p.read_text()) for p in pathlib.Path('$(SMOKE_NYUV2_OUT)/runs').rglob('summary.json')}; \
	bad = {k: s.get('error') for k, s in runs.items() if s['status'] != 'completed'}; \
	print(f'smoke-nyuv2: {len(runs)} runs, failed: {bad or None}; tables in $(SMOKE_NYUV2_OUT)/results'); \
	sys.exit(1 if bad or len(runs) != 45 else 0)"

reproduce-toy-all: $(STAMP) ## Figure 2, toy grid search + GradNorm static (Fig. 4), toy α sweep (Figs. 5, 7); 80 runs, ~32 min: results/toy/
	$(PY) scripts/reproduce.py toy $(ARGS)
	$(PY) scripts/reproduce.py toy_grid $(ARGS)
	$(PY) scripts/reproduce.py toy_alpha $(ARGS)

reproduce-toy-sensitivity: $(STAMP) ## which unstated choices decide Figure 2's claims (15 set-ups, 290 runs, 42 min on 2 cores): results/toy_sensitivity/
	$(PY) scripts/reproduce.py toy_sensitivity $(ARGS)

reproduce-toy-methods: $(STAMP) ## GradNorm vs DWA, RLW, FAMO, PCGrad, MGDA, CAGrad, IMTL-G, Nash-MTL on the toy (110 runs, 61 min on 2 cores): results/toy_methods/
	$(PY) scripts/reproduce.py toy_methods $(ARGS)

reproduce-toy-variants: $(STAMP) ## GradNorm as LibMTL, lucidrains, LucasBoTang, brianlan, Aligned-MTL compute it, and each choice alone, vs the paper's on the toy (T=2,10, 5 seeds, 280 runs; 55 min on 2 cores): results/toy_variants/
	$(PY) scripts/reproduce.py gradnorm_variants $(ARGS)

reproduce-multimnist: $(STAMP) ## GradNorm on real data: MultiMNIST, 2 and 3 tasks, 12 methods x 5 seeds (24 min 18 s on 2 cores, W&B off; ARGS=logger=wandb logs the runs): results/multimnist/
	$(PY) scripts/reproduce.py multimnist $(ARGS)

report: $(STAMP) ## tables, figures, results/REPORT.md from existing runs (RUNS=dir: just aggregate that folder)
	$(if $(RUNS),$(PY) scripts/report.py $(RUNS),$(PY) scripts/report.py --all)

clean: ## remove run outputs (not results/)
	rm -rf outputs multirun runs wandb
