# Herald's everyday commands. CI runs .ci/run, which does lint + test-integration.
.PHONY: all build test test-integration lint bench run fuzz

all: lint test

build:
	go build ./...

# Unit and integration tests; integration tests skip (with a reason) when a
# local service is unreachable.
test:
	go test -race ./...

# The same, but a missing service is a failure, as in CI.
test-integration:
	CI=true go test -race -count=1 ./...

lint:
	@test -z "$$(gofmt -l .)" || (gofmt -l .; echo "run gofmt -w ."; exit 1)
	go vet ./...
	go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

bench:
	go test -run '^$$' -bench . -benchmem ./...

fuzz:
	go test -run '^$$' -fuzz FuzzBinaryDecode -fuzztime 30s ./event
	go test -run '^$$' -fuzz FuzzUnmarshalJSON -fuzztime 30s ./event

run:
	go run ./cmd/herald dev
