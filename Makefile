# labelwall developer entry points. `make test` is what CI runs (after scripts/install-system-deps.sh).
VENV ?= .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?= --durations=30

.PHONY: setup tools demo test lint typecheck pytest bench clean-pins node-tools images e2e-upstream

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $@

# System packages (root) and the project venv.
setup:
	bash scripts/install-system-deps.sh
	$(MAKE) $(VENV)/.installed

# kube-apiserver + etcd (real API server for tests) and helm, built from source through the
# Go module proxy once per pinned version into ~/.cache/labelwall (reused afterwards).
tools:
	bash tools/k8s/build.sh
	bash tools/helm/build.sh
	$(MAKE) node-tools
	$(MAKE) images

# A real node's binaries (kubelet, kube-proxy, containerd, runc, CNI plugins, pause, ...) and
# the upstream e2e runner (e2e.test, agnhost, ginkgo), built from source once per pinned
# version into ~/.cache/labelwall/node/<k8s version>/ (tools/node/README.md).
node-tools:
	bash tools/node/build.sh

# OCI image archives (pause, agnhost, labelwall) in ~/.cache/labelwall/images/, imported into
# each real node's containerd; no registry, no docker engine (root: debootstrap, chroot).
images: $(VENV)/.installed node-tools
	PYTHON=$(PY) bash tools/images/build.sh

# The upstream NetworkPolicy e2e suite (focus Netpol) on a 2-node real cluster with labelwall
# installed by its chart; prints ginkgo's summary and the time (root).
E2E_ARGS ?=
e2e-upstream: $(VENV)/.installed tools
	$(PY) tools/e2e/upstream.py $(E2E_ARGS)

# The main job on the bundled example: the lab demo (real network namespaces and packets;
# root), after printing the offline prediction for the same cluster.
demo: setup
	$(VENV)/bin/labelwall matrix -f examples/ --port http --port 5432
	$(VENV)/bin/labelwall lab demo

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check labelwall tests bench
	$(VENV)/bin/ruff format --check labelwall tests bench
	$(VENV)/bin/lint-imports

# The tests too (every test folder is a package, so their module names are unique).
typecheck: $(VENV)/.installed
	$(VENV)/bin/mypy labelwall tests

# As root, the tests run in a private mount namespace with a bpffs of their own: their
# pins can neither meet a running agent's or lab's nor be disturbed by leftovers.
pytest: $(VENV)/.installed
	if [ "$$(id -u)" = 0 ]; then \
	  unshare --mount --propagation private sh -c \
	    'mount -t bpf bpf /sys/fs/bpf && exec $(VENV)/bin/pytest $(PYTEST_ARGS)'; \
	else $(VENV)/bin/pytest $(PYTEST_ARGS); fi

test: setup tools lint typecheck pytest

# The BPF classifier object the package loads (flags live in bpf_src/build.py, shared with
# setup.py, which also builds it at `pip install .` / `pip install -e .`).
BPF_OBJ := labelwall/datapath/bpf/labelwall.bpf.o
.PHONY: bpf
bpf: $(BPF_OBJ)
$(BPF_OBJ): bpf_src/labelwall.bpf.c bpf_src/labelwall_nf.bpf.c $(wildcard bpf_src/include/labelwall/*.h) bpf_src/build.py
	python3 bpf_src/build.py
