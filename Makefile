# Two commands on a fresh Debian bookworm machine, as root:
#   make run    install what is missing, start narwhald with its defaults
#   make test   install what is missing, run the unit and integration tests
.PHONY: setup run test unit integration lint bench deb fuzz clean

VENV := .venv
PY := $(VENV)/bin/python

setup:
	@hack/setup.sh

run: setup
	$(VENV)/bin/narwhald $(ARGS)

# Two workers, one test module per worker at a time (module-scoped daemons stay whole): the
# integration tests mostly wait on containerd, runc and the network, so this halves the wall time.
XDIST := -n 2 --dist loadfile

test: setup
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) test

unit: setup
	$(PY) -m pytest -q -p no:cacheprovider test/unit

integration: setup
	$(PY) -m pytest -q -p no:cacheprovider $(XDIST) test/integration

lint: setup
	$(VENV)/bin/ruff check narwhal pkg cri dockerapi hack test
	$(VENV)/bin/mypy narwhal pkg cri dockerapi
	$(VENV)/bin/lint-imports

# Not part of `make test` (hack/bench --smoke is, via test/integration/test_bench_smoke.py).
bench: setup
	@$(PY) -c 'import matplotlib' 2>/dev/null || $(VENV)/bin/pip install -q -e '.[bench]'
	$(PY) hack/bench $(ARGS)

# narwhal_<version>_amd64.deb in build/ (docs/install.md); dependency wheels are cached in build/wheels.
deb: setup
	packaging/build-deb.sh build

# The long fuzz/abuse run (issue 15; `make test` runs the same modules with small budgets): docs/security.md.
fuzz: setup
	$(PY) hack/fuzz $(ARGS)

clean:
	rm -rf $(VENV) pkg/containerd/api build *.egg-info
