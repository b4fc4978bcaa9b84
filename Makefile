# photostyle: `make demo` sets everything up and runs a transfer on the bundled example;
# `make test` sets everything up and runs the tests. Both work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	$(BIN)/photostyle weights --fetch vgg16-imagenet lpips-vgg-heads wordnet
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/photostyle transfer examples/rocket.jpg examples/coffee.png -o out/rocket-coffee.jpg \
		--overwrite --report out/rocket-coffee.json
	@echo "result: out/rocket-coffee.jpg  (report: out/rocket-coffee.json)"

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out .pytest_cache
