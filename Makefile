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

# The fast tier for the edit-test loop: go test -short in every module. Its
# tests mostly wait (on sandboxes, fakes, time bounds), so four test binaries
# run at once rather than one per core (-p 4: 300 -> 227 s on 2 cores).
test-short:
	@scripts/test-modules.sh -short -count=1 -timeout 10m -p 4

# The modules are one workspace (go.work): one go vet, one staticcheck take
# them all, loading each package once.
PATTERNS := $(addsuffix /...,$(MODULES))

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
