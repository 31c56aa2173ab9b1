# bot-bottle. `make shell` builds everything and starts the built-in shell
# agent; `make test` runs every test. See README.md.

GO       ?= go
BIN      := bin
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -s -w -X main.version=$(VERSION)
PLUGINS  := $(filter-out internal kubernetes,$(notdir $(wildcard plugins/*)))
FUZZTIME ?= 10s

.PHONY: all build shell test unit vet fuzz bench proto base-image deps clean build-kubernetes test-kubernetes bench-kubernetes

all: build

## build: bin/bot-bottle (static: it is also the in-bottle helper, run as `bottle`), bin/bottle (the helper alone) and every bin/bot-bottle-plugin-*, static (the docker plugin is also its bottles' egress proxy, run FROM scratch), with the example skeleton (its own module)
build:
	CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/bot-bottle ./cmd/bot-bottle
	CGO_ENABLED=0 $(GO) build -ldflags '-s -w' -o $(BIN)/bottle ./cmd/bottle
	@for p in $(PLUGINS); do \
		echo "CGO_ENABLED=0 $(GO) build -o $(BIN)/bot-bottle-plugin-$$p ./plugins/$$p"; \
		CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/bot-bottle-plugin-$$p ./plugins/$$p || exit 1; \
	done
	cd examples/backend-skeleton && $(GO) build -ldflags '-s -w' -o $(CURDIR)/$(BIN)/bot-bottle-plugin-skeleton .
	$(MAKE) build-kubernetes

## build-kubernetes: the kubernetes backend (its own module, on client-go) and its static in-pod helper
build-kubernetes:
	cd plugins/kubernetes && $(GO) build -ldflags '$(LDFLAGS)' -o $(CURDIR)/$(BIN)/bot-bottle-plugin-kubernetes .
	cd plugins/kubernetes && CGO_ENABLED=0 GOOS=linux $(GO) build -trimpath -ldflags '-s -w' -o $(CURDIR)/$(BIN)/bot-bottle-kube-init ./cmd/bot-bottle-kube-init

## shell: build, provide the shell agent's base image, and start the shell agent on the current directory
shell: build base-image
	$(BIN)/bot-bottle start shell --cwd .

## test: every test (unit, plugin, CLI end-to-end against the real Docker Engine), vet, and a short fuzz run
test: deps build base-image vet
	$(GO) test -count=1 -timeout 40m ./...
	cd sdk && $(GO) test -count=1 ./...
	cd examples/backend-skeleton && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(MAKE) test-kubernetes
	$(MAKE) fuzz

## test-kubernetes: the kubernetes backend against a real single-node cluster that scripts/test-cluster.sh starts (building its cached binaries first, outside go test's timeout) and takes down, also on failure
test-kubernetes:
	cd plugins/kubernetes && $(GO) vet ./...
	scripts/test-cluster.sh run -- sh -c 'cd plugins/kubernetes && $(GO) test -count=1 -timeout 30m ./...'

vet:
	$(GO) vet ./...
	cd sdk && $(GO) vet ./...

## fuzz: the untrusted-request parser and the untrusted-text renderer, each for a short fixed time
fuzz:
	@if [ -d internal/queue ]; then $(GO) test -run '^$$' -fuzz FuzzParseRequest -fuzztime $(FUZZTIME) ./internal/queue; fi
	cd sdk && $(GO) test -run '^$$' -fuzz FuzzText -fuzztime $(FUZZTIME) ./render

## bench: start latency against a bare docker run, plugin handshake, version, `requests` during one bottle's flood
bench: build base-image
	$(GO) test -run '^$$' -bench . -benchtime 10x -count 1 ./cmd/bot-bottle ./internal/pluginhost ./internal/queue ./plugins/...

## bench-kubernetes: start to first output against `kubectl run --rm -i`, attach round trip and 20 concurrent starts, on the test cluster
bench-kubernetes: build
	scripts/test-cluster.sh run -- sh -c 'cd plugins/kubernetes && $(GO) test -count=1 -run "^$$" -bench . -benchtime 5x ./...'

## proto: regenerate the SDK's committed gRPC code with the pinned tools: Debian's protoc (protobuf-compiler) and the generators in sdk/internal/pluginpb/tools/go.mod; `cd sdk && go test ./...` fails when it is not current
proto:
	sdk/internal/pluginpb/gen.sh

## base-image: the shell agent's base image, made from Debian's packages when no registry can provide it
base-image:
	scripts/base-image.sh

## deps: Debian packages the tests need (busybox-static, debootstrap, tcpdump, protobuf-compiler)
deps:
	scripts/deps.sh

clean:
	rm -rf $(BIN)
