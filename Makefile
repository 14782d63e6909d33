# Set-up and entry points. Each target creates .venv (pinned torch) when it is missing.
PY := .venv/bin/python
export HF_HUB_OFFLINE := 1

.PHONY: demo test venv clean

venv: .venv/.installed

.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# NOTE: pinned so pip takes the local wheels; an unpinned torch would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e ".[export,eval,dev]"
	touch $@

demo: venv
	$(PY) -m fna_zoo.demo
	$(PY) search/retrain.py --config configs/demo_retinanet.yaml
	$(PY) search/test.py --checkpoint runs/demo_retinanet/final.pth

test: venv
	$(PY) -m pytest -q tests

clean:
	rm -rf .venv build *.egg-info
