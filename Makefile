# Grayscale: `make demo` runs the walk-through, `make test` runs the tests.
# Both install the system libraries first when they are missing.

SWIFT ?= swift
APT_PACKAGES := libcurl4-openssl-dev libsqlite3-dev
# What the tests need besides: a real Prometheus (and promtool), a headless browser and
# PostgreSQL's server (the tests start their own, on loopback, as the postgres user).
TEST_PACKAGES := prometheus chromium postgresql python3-venv curl tmux
# schemathesis and slack_sdk (PyPI), in their own virtual environment under .build-ecosystem/.
SCHEMATHESIS_VERSION := 4.32.5
SLACK_SDK_VERSION := 3.48.0
ECOSYSTEM_VENV := .build-ecosystem
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps test-deps install-packages build test chaos ecosystem demo walkthrough dashboards clean

deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(APT_PACKAGES)"

test-deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(APT_PACKAGES) $(TEST_PACKAGES)"
	@$(ECOSYSTEM_VENV)/bin/pip show schemathesis slack_sdk 2>/dev/null | grep -q "Version: $(SLACK_SDK_VERSION)" && \
	  $(ECOSYSTEM_VENV)/bin/schemathesis --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)" || { \
	  python3 -m venv --clear $(ECOSYSTEM_VENV) && \
	  $(ECOSYSTEM_VENV)/bin/pip install -q "schemathesis==$(SCHEMATHESIS_VERSION)" "slack_sdk==$(SLACK_SDK_VERSION)"; }

install-packages:
	@missing=""; \
	for package in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$package 2>/dev/null | grep -q "ok installed" || missing="$$missing $$package"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

build: deps
	$(SWIFT) build

# The chaos suite runs on its own: its two controllers and many short-lived processes
# would otherwise compete for the machine's cores with the timing of other suites. So do
# the Heavy suites (10,000 users through the proxy, platform simulations): CPU-bound for
# half a minute each, they starved the timing of the server suites beside them.
test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip 'Chaos|Heavy'
	$(SWIFT) test --skip-build --filter Heavy
	$(SWIFT) test --skip-build --filter Chaos
	./scripts/ecosystem-checks.sh "$$($(SWIFT) build --show-bin-path)/grayscale"

# The admin API against its contract with schemathesis (SCHEMATHESIS_SEED=N replays a run),
# and the Slack endpoints with Slack's own SDK, on a live serve.
ecosystem: test-deps
	$(SWIFT) build --product grayscale
	./scripts/ecosystem-checks.sh "$$($(SWIFT) build --show-bin-path)/grayscale"

chaos: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --filter Chaos

demo: build
	./scripts/demo.sh "$$($(SWIFT) build --show-bin-path)/grayscale"

walkthrough: build
	./scripts/walkthrough.sh "$$($(SWIFT) build --show-bin-path)/grayscale"

# Files generated from the code; a test fails when they are not current.
dashboards: build
	"$$($(SWIFT) build --show-bin-path)/grayscale" dashboard grafana > dashboards/grafana.json

clean:
	rm -rf .build .build-ecosystem
