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

# Every fuzz target for FUZZTIME each (go test -fuzz takes one target per run).
FUZZTIME ?= 30s
fuzz:
	@set -e; for t in \
		./event:FuzzBinaryDecode ./event:FuzzUnmarshalJSON \
		./schema/avro:FuzzParse ./schema/jsonschema:FuzzParse ./schema/jsonschema:FuzzFastValidator \
		./schema/protobuf:FuzzParse ./schema/serde:FuzzParseFrame ./schema/serde:FuzzDecode \
		./server/registry:FuzzHandler ./server/admin:FuzzParseFilter ./server/admin:FuzzParseEntryID \
		./server/admin:FuzzParseAuditQuery ./server/admin:FuzzDecodeRequests ./server/admin:FuzzParseTopicRetention \
		./server/audit:FuzzQueryCursor ./broker/kafka:FuzzDecodeMeta ./idempotency/natskv:FuzzDecode \
		./server/auth:FuzzGuard ./server:FuzzSecureHTTP; do \
		pkg=$${t%%:*}; fn=$${t##*:}; echo "== $$pkg $$fn"; \
		go test -run '^$$' -fuzz "^$$fn$$" -fuzztime $(FUZZTIME) $$pkg; \
	done

run:
	go run ./cmd/herald dev
