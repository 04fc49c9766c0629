# Herald: `make run` starts the service (dev profile); `make test` runs every test.
# Builds share one target directory outside the checkout, so repeated runs and
# CI stay incremental.
CARGO_TARGET_DIR ?= $(HOME)/.cache/herald-target
export CARGO_TARGET_DIR

.PHONY: run test services build lint fmt

services:
	@scripts/services.sh

run: services
	cargo run --bin herald -- --profile dev serve

build:
	cargo build --workspace --all-targets

test: services
	@if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace; \
	else \
		cargo test --workspace; \
	fi

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Herald end to end under load (scripts/bench.sh; BENCH_RATE, BENCH_DURATION,
# BENCH_RUNS …); figures in BENCHMARKS.md.
.PHONY: bench
bench: services
	@scripts/bench.sh

# Herald and Kannel (Debian package) side by side against the same SMSC
# simulator and load (scripts/bench-peers.sh; PEERS_RUNS, PEERS_DURATION,
# PEERS_HERALD_RATE, PEERS_KANNEL_RATE …); figures in BENCHMARKS.md.
.PHONY: bench-peers
bench-peers: services
	@scripts/bench-peers.sh
