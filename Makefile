# Every Go module in the repository: the root and the nested ones that keep
# heavy SDKs out of the core module's dependencies.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -printf '%h\n' | sort)

.PHONY: test test-short vet staticcheck fmt-check bench

# The test command the README gives and CI runs: every module, with the race
# detector (scripts/test-modules.sh: one go test over the workspace's
# modules, which goes on past a failing package; the failing packages are
# listed at the end and the command exits non-zero; the Kubernetes
# provider's tests, which mostly wait for their cluster, run beside in a go
# test of their own).
test:
	@scripts/test-modules.sh -race -count=1 -timeout 45m

# The fast tier for the edit-test loop: go test -short in every module
# (conformance.Run runs its smoke set; the tools' battery runs once, on the
# local provider). Many of its tests wait (on sandboxes, fakes, time bounds),
# so six test binaries run at once rather than one per core (on 2 idle
# cores: -p 4 152 s, -p 6 130 s, -p 8 132 s).
test-short:
	@scripts/test-modules.sh -short -count=1 -timeout 10m -p 6

# The modules are one workspace (go.work): one go vet, one staticcheck take
# them all, loading each package once; with them the programs under
# cmd/perimeter/testdata that the CLI's benchmark builds, which ./... skips.
PATTERNS := $(addsuffix /...,$(MODULES)) ./cmd/perimeter/testdata/localonly ./cmd/perimeter/testdata/gopair

vet:
	go vet $(PATTERNS)

# staticcheck over every module (.ci/run installs the pinned version).
staticcheck:
	staticcheck $(PATTERNS)

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt -l lists unformatted files:"; echo "$$out"; exit 1; fi

# Benchmarks side by side with their baselines; not part of CI.
bench:
	go test -run '^$$' -bench . -benchmem ./...
