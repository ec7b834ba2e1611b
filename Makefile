# Every Go module in the repository: the root and the nested ones that keep
# heavy SDKs out of the core module's dependencies.
MODULES := $(shell find . -name go.mod -not -path './.git/*' -printf '%h\n' | sort)

.PHONY: test vet fmt-check bench

# The test command the README gives and CI runs.
test:
	@set -e; for m in $(MODULES); do \
		echo "== go test -race $$m"; \
		(cd $$m && go test -race -count=1 -timeout 30m ./...); \
	done

vet:
	@set -e; for m in $(MODULES); do \
		echo "== go vet $$m"; \
		(cd $$m && go vet ./...); \
	done

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt -l lists unformatted files:"; echo "$$out"; exit 1; fi

# Benchmarks side by side with their baselines; not part of CI.
bench:
	go test -run '^$$' -bench . -benchmem ./...
