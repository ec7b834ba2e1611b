# Every Go module in the repository: the root and the nested ones that keep
# heavy SDKs out of the core module's dependencies.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -printf '%h\n' | sort)

.PHONY: test test-short vet staticcheck fmt-check bench

# The test command the README gives and CI runs: every module, with the race
# detector. A failing module does not stop the others; the failures are listed
# at the end and the command exits non-zero.
test:
	@failed=""; for m in $(MODULES); do \
		echo "== go test -race $$m"; \
		(cd $$m && go test -race -count=1 -timeout 45m ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "== FAILED modules:$$failed"; exit 1; fi; \
	echo "== all modules passed"

# The fast tier for the edit-test loop: go test -short in every module.
test-short:
	@failed=""; for m in $(MODULES); do \
		echo "== go test -short $$m"; \
		(cd $$m && go test -short -count=1 -timeout 10m ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "== FAILED modules:$$failed"; exit 1; fi; \
	echo "== all modules passed"

vet:
	@failed=""; for m in $(MODULES); do \
		echo "== go vet $$m"; \
		(cd $$m && go vet ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "== go vet failed in:$$failed"; exit 1; fi

# staticcheck over every module (.ci/run installs the pinned version).
staticcheck:
	@failed=""; for m in $(MODULES); do \
		echo "== staticcheck $$m"; \
		(cd $$m && staticcheck ./...) || failed="$$failed $$m"; \
	done; \
	if [ -n "$$failed" ]; then echo "== staticcheck failed in:$$failed"; exit 1; fi

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt -l lists unformatted files:"; echo "$$out"; exit 1; fi

# Benchmarks side by side with their baselines; not part of CI.
bench:
	go test -run '^$$' -bench . -benchmem ./...
