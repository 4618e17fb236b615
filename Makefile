# drover's build. `make` builds ./drover; `make check` is the whole suite
# (what the README and CI run); `make bench` runs the benchmarks.
#
# Variants build out of tree: BUILD=release (default), BUILD=asan
# (AddressSanitizer + UndefinedBehaviorSanitizer), BUILD=clang.

BUILD ?= release
OUT   := build/$(BUILD)
PKGS  := libmicrohttpd jansson sqlite3 libcurl libcrypto inih
PYTHON ?= /usr/bin/python3
JOBS  ?= 2

ifeq ($(BUILD),clang)
CC := clang
endif

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS))
PKG_LIBS   := $(shell pkg-config --libs $(PKGS))

CFLAGS  ?= -O2 -g
CFLAGS  += -std=c17 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wvla \
           -D_GNU_SOURCE -Isrc $(PKG_CFLAGS) -MMD -MP
# jemalloc replaces glibc's malloc (docs/adr/0016-jemalloc.md); the
# sanitizer builds keep the sanitizers' allocator.
ifeq ($(filter $(BUILD),asan fuzz),)
ALLOC_LIBS := $(shell pkg-config --libs jemalloc)
ifeq ($(ALLOC_LIBS),)
$(error jemalloc is missing: scripts/install-deps.sh installs it (libjemalloc-dev))
endif
endif
LDLIBS  += $(PKG_LIBS) $(ALLOC_LIBS) -lpthread

ifeq ($(BUILD),asan)
CC      := clang
CFLAGS  := $(filter-out -O2,$(CFLAGS)) -O1 -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

# BUILD=fuzz: the library with libFuzzer's coverage instrumentation and
# ASan+UBSan, for `make fuzz` (fuzz/README.md). The targets add libFuzzer's
# main() when they link.
ifeq ($(BUILD),fuzz)
CC      := clang
CFLAGS  := $(filter-out -O2,$(CFLAGS)) -O1 -fsanitize=fuzzer-no-link,address,undefined \
           -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=fuzzer,address,undefined
endif

SRC      := $(wildcard src/*.c src/store/*.c src/http/*.c src/api/*.c src/cli/*.c)
LIB_SRC  := $(filter-out src/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(OUT)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OUT)/tests/%)

.PHONY: all test test-unit test-integration check asan clang bench bench-e2e bench-webhooks format format-check clean deps

all: drover

# rm first: a running ./drover keeps its old file (no "text file busy").
drover: $(OUT)/drover
	rm -f $@ && cp $< $@

$(OUT)/drover: $(OUT)/src/main.o $(OUT)/libdrover.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(OUT)/libdrover.a: $(LIB_OBJ)
	$(AR) rcs $@ $^

$(OUT)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

# TESTDATA_DIR: checked-in test inputs (tests/testdata/), by absolute path so
# a test binary finds them whatever its working directory.
$(OUT)/tests/%: tests/unit/%.c $(OUT)/libdrover.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -DTESTDATA_DIR='"$(abspath tests/testdata)"' $(LDFLAGS) \
	    -o $@ $< $(OUT)/libdrover.a $(LDLIBS) -lcmocka

# Unit tests: each cmocka binary is its own process.
test-unit: $(UNIT_BIN)
	@failed=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || failed=1; done; exit $$failed

# Integration tests start the real binary on loopback ports.
test-integration: $(OUT)/drover
	DROVER_BIN=$(abspath $(OUT)/drover) $(PYTHON) -m pytest -q tests/integration

test: test-unit test-integration test-fuzz-replay

# The whole suite: release build, the same suite under ASan+UBSan, and a
# clang build with the same warnings.
check:
	$(MAKE) BUILD=release test
	$(MAKE) BUILD=asan test
	$(MAKE) BUILD=clang build/clang/drover test-unit

bench: drover $(OUT)/bench/e2e $(OUT)/bench/receiver
	bench/run.sh
	bench/run-e2e.sh
	bench/run-keys.sh
	bench/run-webhooks.sh

# End to end: submit, claim, complete (bench/e2e.c drives the server).
bench-e2e: drover $(OUT)/bench/e2e
	bench/run-e2e.sh

# Webhooks: signed deliveries per second to a local receiver (bench/receiver.c).
bench-webhooks: drover $(OUT)/bench/receiver
	bench/run-webhooks.sh

$(OUT)/bench/receiver: bench/receiver.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(LDFLAGS) $(PKG_LIBS)

$(OUT)/bench/e2e: bench/e2e.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS) -lm

format:
	clang-format -i $(SRC) $(wildcard src/*.h src/*/*.h tests/unit/*.c tests/unit/*.h bench/*.c fuzz/*.c)

format-check:
	clang-format --dry-run -Werror $(SRC) $(wildcard src/*.h src/*/*.h tests/unit/*.c tests/unit/*.h bench/*.c fuzz/*.c)

deps:
	scripts/install-deps.sh

clean:
	rm -rf build drover

# ---- fuzzing: one target per parser of outside input (fuzz/README.md) ----

.PHONY: fuzz fuzz-run test-fuzz-replay

FUZZ_TARGETS := submit policy time ulid config router template cidr signature subscription
FUZZ_OBJ     := $(FUZZ_TARGETS:%=$(OUT)/fuzz/fuzz_%.o)
FUZZ_SECONDS ?= 30
FUZZ_FLAGS   ?=

# The corpora replayed without libFuzzer, under this variant's CFLAGS (so
# under ASan+UBSan with BUILD=asan): milliseconds; the first failing input
# is named (fuzz/replay.c).
FUZZ_REPLAY_BIN := $(FUZZ_TARGETS:%=$(OUT)/fuzz/replay-%)
# Objects made through a chain of pattern rules; keep them between runs.
.SECONDARY: $(FUZZ_OBJ) $(OUT)/fuzz/replay.o

$(OUT)/fuzz/replay-%: $(OUT)/fuzz/fuzz_%.o $(OUT)/fuzz/replay.o $(OUT)/libdrover.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

test-fuzz-replay: $(FUZZ_REPLAY_BIN)
	@failed=0; for t in $(FUZZ_TARGETS); do \
	    $(OUT)/fuzz/replay-$$t fuzz/corpus/$$t || failed=1; done; exit $$failed

# libFuzzer binaries in build/fuzz/, run one after another for FUZZ_SECONDS
# each. New inputs go to build/fuzz/new/<target>/ (the first corpus
# directory is the one libFuzzer writes to), crashes to build/fuzz/artifacts/;
# the checked-in corpus is only read.
fuzz:
	$(MAKE) BUILD=fuzz fuzz-run

ifeq ($(BUILD),fuzz)
$(OUT)/fuzz_%: $(OUT)/fuzz/fuzz_%.o $(OUT)/libdrover.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

fuzz-run: $(FUZZ_TARGETS:%=$(OUT)/fuzz_%)
	@failed=""; for t in $(FUZZ_TARGETS); do \
	    mkdir -p $(OUT)/new/$$t $(OUT)/artifacts; \
	    dict=; test -f fuzz/$$t.dict && dict=-dict=fuzz/$$t.dict; \
	    echo "== fuzz_$$t for $(FUZZ_SECONDS)s"; \
	    $(OUT)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	        -artifact_prefix=$(OUT)/artifacts/$$t- $$dict $(FUZZ_FLAGS) \
	        $(OUT)/new/$$t fuzz/corpus/$$t || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: findings in:$$failed ($(OUT)/artifacts/)"; exit 1; fi
else
fuzz-run:
	$(MAKE) BUILD=fuzz fuzz-run
endif

-include $(LIB_OBJ:.o=.d) $(OUT)/src/main.d $(OUT)/bench/e2e.d $(OUT)/bench/receiver.d
-include $(FUZZ_OBJ:.o=.d) $(OUT)/fuzz/replay.d
