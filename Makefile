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
LDLIBS  += $(PKG_LIBS) -lpthread

ifeq ($(BUILD),asan)
CC      := clang
CFLAGS  := $(filter-out -O2,$(CFLAGS)) -O1 -fsanitize=address,undefined \
           -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDFLAGS += -fsanitize=address,undefined
endif

SRC      := $(wildcard src/*.c src/store/*.c src/http/*.c src/api/*.c src/cli/*.c)
LIB_SRC  := $(filter-out src/main.c,$(SRC))
LIB_OBJ  := $(LIB_SRC:%.c=$(OUT)/%.o)
UNIT_SRC := $(wildcard tests/unit/test_*.c)
UNIT_BIN := $(UNIT_SRC:tests/unit/%.c=$(OUT)/tests/%)

.PHONY: all test test-unit test-integration check asan clang bench bench-e2e format format-check clean deps

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

$(OUT)/tests/%: tests/unit/%.c $(OUT)/libdrover.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit $(LDFLAGS) -o $@ $< $(OUT)/libdrover.a $(LDLIBS) -lcmocka

# Unit tests: each cmocka binary is its own process.
test-unit: $(UNIT_BIN)
	@failed=0; for t in $(UNIT_BIN); do echo "== $$t"; $$t || failed=1; done; exit $$failed

# Integration tests start the real binary on loopback ports.
test-integration: $(OUT)/drover
	DROVER_BIN=$(abspath $(OUT)/drover) $(PYTHON) -m pytest -q tests/integration

test: test-unit test-integration

# The whole suite: release build, the same suite under ASan+UBSan, and a
# clang build with the same warnings.
check:
	$(MAKE) BUILD=release test
	$(MAKE) BUILD=asan test
	$(MAKE) BUILD=clang build/clang/drover test-unit

bench: drover $(OUT)/bench/e2e
	bench/run.sh
	bench/run-e2e.sh

# End to end: submit, claim, complete (bench/e2e.c drives the server).
bench-e2e: drover $(OUT)/bench/e2e
	bench/run-e2e.sh

$(OUT)/bench/e2e: bench/e2e.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LDLIBS) -lm

format:
	clang-format -i $(SRC) $(wildcard src/*.h src/*/*.h tests/unit/*.c tests/unit/*.h)

format-check:
	clang-format --dry-run -Werror $(SRC) $(wildcard src/*.h src/*/*.h tests/unit/*.c tests/unit/*.h)

deps:
	scripts/install-deps.sh

clean:
	rm -rf build drover

-include $(LIB_OBJ:.o=.d) $(OUT)/src/main.d $(OUT)/bench/e2e.d
