# ebsd — see README.md. Every target installs what it needs on a fresh Debian machine.
GO        ?= go
DATA_DIR  ?= .ebsd/data
MOUNT_DIR ?= .ebsd/mnt
LISTEN    ?= 127.0.0.1:8600
# Benchmarks run a fixed number of blocks so runs compare (see BENCHMARKS.md).
BENCH_BLOCKS ?= 1500

E2E_DIR   ?= .ebsd/e2e

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: all build run test test-short e2e bench bench-images soak deps cluster-deps cluster-test fmt vet lint clean

all: build

build:
	$(GO) build -o bin/ebsd ./daemon
	$(GO) build -o bin/ebsctl ./tools/ebsctl

# The daemon on the embedded default: Badger under .ebsd/data, HTTP on loopback,
# FUSE mount point .ebsd/mnt.
run: deps build
	./bin/ebsd --data-dir $(DATA_DIR) --listen $(LISTEN) --mount $(MOUNT_DIR)

# Every test, with the race detector. EBSD_REQUIRE_FUSE=1 (set by CI) turns a skipped
# FUSE test into a failure. The real AWS clients (CLI v2, boto3), promtool and
# Chromium the tests drive come from Debian through `deps`.
test: deps cluster-deps
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))" || { echo "gofmt needed:"; gofmt -l .; exit 1; }
	EBSD_CLUSTER=1 $(GO) test -race -count=1 -timeout 15m ./...

# The dd-style restore test of scripts/restore-test.sh on small generated ext4 images
# (a base and a changed one), through a real daemon, FUSE and a loop mount (root).
e2e: deps build
	scripts/make-image.sh --size-mib 128 $(E2E_DIR)
	scripts/restore-test.sh --tree $(E2E_DIR)/tree $(E2E_DIR)/base.img
	scripts/restore-test.sh --tree $(E2E_DIR)/next-tree $(E2E_DIR)/next.img

# The soak (not part of `make test`; needs root for the FUSE mount): the real daemon under
# uploads, API and FUSE reads, deletes, GC and scrub, killed with -9 every few seconds for
# SOAK_DURATION, then everything it acknowledged is checked (tools/soak): "lost: 0" or the
# losses, exit 1 on any loss or unexplained error. SOAK_FLAGS: --seed N, --kill-every 2s, --keep.
SOAK_DURATION ?= 10m
SOAK_FLAGS    ?=
soak: deps build
	$(GO) run ./tools/soak --ebsd bin/ebsd --duration $(SOAK_DURATION) $(SOAK_FLAGS)

# PostgreSQL 15 (Debian) and the S3 server (versitygw, built once from the Go module proxy
# into ~/.cache/ebsd-cluster) for the shared-store tests; see scripts/cluster.sh.
cluster-deps:
	scripts/cluster.sh deps

# scripts/cluster.sh end to end: two clusters, psql and aws s3 cp through the exports,
# restarts of both servers, nothing left after down.
cluster-test: cluster-deps
	scripts/cluster_test.sh

test-short:
	$(GO) test -count=1 ./...

# Speeds next to this machine's ceilings (raw SHA-256, dd from the page cache); the FUSE
# benchmark drops the page cache, so it needs root. Results: BENCHMARKS.md.
bench: deps
	$(GO) test -run '^$$' -bench 'SHA256|Compress|ValueThreshold|ReadBlock' -benchtime 1500x ./cas
	$(GO) test -run '^$$' -bench 'ViewPage' ./cas
	$(GO) test -run '^$$' -bench 'PutSnapshotBlock' -benchtime $(BENCH_BLOCKS)x -v ./daemon | grep -E '^Benchmark|SHA-256|^ok|FAIL'
	$(GO) test -run '^$$' -bench 'FUSERead' -benchtime 2x -v ./daemon | grep -E '^Benchmark|page cache|^ok|FAIL' 
	$(MAKE) bench-images

# ebsd next to restic on a debootstrapped Debian image (issue 11's ratios as the last
# lines), then the embedded store next to S3 + PostgreSQL and two daemons on them. Root.
bench-images: build cluster-deps
	scripts/efficiency-bench.sh --debootstrap --size-mib 1024 --recompress best
	scripts/shared-bench.sh --debootstrap --size-mib 1024

# Debian packages the tests and the FUSE export use, installed only when missing:
# FUSE, mkfs.ext4 and openssl for images and checksums, the AWS CLI v2 and boto3 the
# client tests drive, promtool (prometheus) for the metrics format, Chromium for the
# status page.
deps:
	@missing=""; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3"; \
	command -v mkfs.ext4 >/dev/null 2>&1 || missing="$$missing e2fsprogs"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	test -x /usr/bin/aws || missing="$$missing awscli"; \
	/usr/bin/python3 -c 'import boto3' >/dev/null 2>&1 || missing="$$missing python3-boto3"; \
	command -v promtool >/dev/null 2>&1 || missing="$$missing prometheus"; \
	test -x /usr/bin/chromium || missing="$$missing chromium"; \
	test -e /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf || missing="$$missing fonts-dejavu-core"; \
	command -v setpriv >/dev/null 2>&1 || missing="$$missing util-linux"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO=sudo; \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

fmt:
	gofmt -w $$(git ls-files '*.go')

vet:
	$(GO) vet ./...

# staticcheck from the Go module proxy at a pinned version (staticcheck.conf says what
# is off and why).
lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

clean:
	rm -rf bin
