# Grayscale: `make demo` runs the walk-through, `make test` runs the tests.
# Both install the system libraries first when they are missing.

SWIFT ?= swift
APT_PACKAGES := libcurl4-openssl-dev libsqlite3-dev
# What the tests need besides: a real Prometheus (and promtool), a headless browser and
# PostgreSQL's server (the tests start their own, on loopback, as the postgres user).
TEST_PACKAGES := prometheus chromium postgresql python3-venv curl
# schemathesis (PyPI), in its own virtual environment under .build-schemathesis/.
SCHEMATHESIS_VERSION := 4.32.5
SCHEMATHESIS := .build-schemathesis/bin/schemathesis
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps test-deps install-packages build test chaos schemathesis demo walkthrough dashboards clean

deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(APT_PACKAGES)"

test-deps:
	@$(MAKE) --no-print-directory install-packages PACKAGES="$(APT_PACKAGES) $(TEST_PACKAGES)"
	@$(SCHEMATHESIS) --version 2>/dev/null | grep -q "$(SCHEMATHESIS_VERSION)" || { \
	  python3 -m venv .build-schemathesis && \
	  .build-schemathesis/bin/pip install -q "schemathesis==$(SCHEMATHESIS_VERSION)"; }

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
# would otherwise compete for the machine's cores with the timing of other suites.
test: test-deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip Chaos
	$(SWIFT) test --skip-build --filter Chaos
	./scripts/schemathesis.sh "$$($(SWIFT) build --show-bin-path)/grayscale"

# The admin API against its contract, with schemathesis (SCHEMATHESIS_SEED=N replays a run).
schemathesis: test-deps
	$(SWIFT) build --product grayscale
	./scripts/schemathesis.sh "$$($(SWIFT) build --show-bin-path)/grayscale"

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
	rm -rf .build
