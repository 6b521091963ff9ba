# ferry - one non-recursive GNU Makefile.
#
#   make            build bin/ferryd (optimised)
#   make test       install missing packages (Chromium too, for the dashboard's
#                   test), build everything under ASan+UBSan with -Werror, run
#                   unit tests, then integration tests against a throwaway
#                   PostgreSQL cluster
#   make check-faults the fault suite (tests/faults/) in its long form: 100
#                   kills of ferryd, 20 PostgreSQL restarts, a 3-minute outage
#                   under traffic (`make test` runs 5, 2 and 20 s); same set-up
#                   as make test. `make check-long` is the same.
#   make run        install missing packages, build, start a private PostgreSQL
#                   under var/, migrate, run ferryd in the foreground
#   make check      clang-format and banned.h checks on the tree
#   make install    PREFIX, DESTDIR, SYSCONFDIR honoured
#   make clean
#
# V=1 shows the full commands.

PREFIX ?= /usr/local
SYSCONFDIR ?= $(PREFIX)/etc
BINDIR ?= $(PREFIX)/bin
DATADIR ?= $(PREFIX)/share

CC ?= cc
PKGS := libcurl libpq libmicrohttpd jansson libuv openssl
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)
# libyaml reads admin/openapi.yaml for the tests (tests/integration/openapi.h);
# ferryd does not link it.
YAML_LIBS = $(shell pkg-config --libs yaml-0.1 jansson 2>/dev/null)

VERSION := $(shell cat VERSION)

WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wformat=2 \
	-Wvla -Wpointer-arith -Wno-unused-parameter -Wundef
BASE_CFLAGS := -std=c17 -D_GNU_SOURCE -MMD -MP -I. -Ibuild/gen $(WARN) \
	-DFERRY_VERSION='"$(VERSION)"'
REL_CFLAGS := -O2 -g
# The tests' builds have the test hooks (FERRY_FAULTS: the crash points of
# common/fault.h, the push service's speed-up in push/push.c), both of
# them, since the tests that rely on a hook run against either daemon;
# release builds never do.
ASAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
	-fno-sanitize-recover=undefined -Werror -DFERRY_FAULTS
TSAN_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=thread -Werror -DFERRY_FAULTS
CFLAGS ?=
LDFLAGS ?=

ifeq ($(V),1)
Q :=
else
Q := @
endif

# ---- sources ----------------------------------------------------------------

COMMON_SRCS := \
	common/buf.c \
	common/config.c \
	common/config_ref.c \
	common/conninfo.c \
	common/err.c \
	common/fault.c \
	common/hist.c \
	common/log.c \
	common/mailbox.c \
	common/secfile.c

QUEUE_SRCS := \
	queue/device.c \
	queue/migrate.c \
	queue/pg.c \
	queue/receipts.c \
	queue/registry.c \
	queue/secret.c \
	queue/store.c \
	queue/store_conn.c \
	queue/store_read.c \
	queue/store_write.c \
	queue/validate.c

ADMIN_SRCS := \
	admin/http.c \
	admin/routes.c \
	admin/routes_ops.c \
	admin/routes_push.c \
	admin/routes_stats.c \
	admin/routes_ui.c

PUSH_SRCS := \
	push/apns.c \
	push/creds.c \
	push/fcm.c \
	push/http.c \
	push/jwt.c \
	push/note.c \
	push/push.c \
	push/response.c \
	push/wake.c

GATEWAY_SRCS := \
	gateway/authfail.c \
	gateway/conn.c \
	gateway/deliver.c \
	gateway/directory.c \
	gateway/gateway.c \
	gateway/ops.c \
	gateway/presence.c \
	gateway/privs.c \
	gateway/proto.c \
	gateway/receipt.c \
	gateway/route.c \
	gateway/tls.c

MAIN_SRCS := \
	gateway/main.c

# libferry: the client library (not linked into ferryd), and ferry-client.
CLIENT_SRCS := \
	client/client.c \
	client/conn.c \
	client/dedup.c \
	client/handle.c \
	client/net.c \
	client/sendq.c \
	client/tls.c \
	client/util.c

CLI_SRCS := \
	client/cli.c \
	client/cli_util.c

# ferryctl: the operators' CLI over the admin API (libcurl, jansson).
FERRYCTL_SRCS := \
	tools/ferryctl.c \
	tools/ferryctl_args.c \
	tools/ferryctl_out.c

FERRYCTL_DEPS_SRCS := \
	common/buf.c \
	common/err.c \
	common/log.c

# What libferry needs from the rest of the tree.
CLIENT_DEPS_SRCS := \
	common/buf.c \
	common/err.c \
	common/log.c \
	gateway/proto.c

GEN_SRCS := build/gen/migrations.c build/gen/ui_page.c

LIB_SRCS := $(COMMON_SRCS) $(QUEUE_SRCS) $(ADMIN_SRCS) $(GATEWAY_SRCS) $(PUSH_SRCS)
SQL_FILES := $(sort $(wildcard sql/*.sql))

UNIT_TESTS := \
	tests/unit/admin/test_openapi \
	tests/unit/client/test_client \
	tests/unit/common/test_buf \
	tests/unit/common/test_config \
	tests/unit/common/test_hist \
	tests/unit/gateway/test_codec_allocfail \
	tests/unit/gateway/test_presence \
	tests/unit/gateway/test_proto \
	tests/unit/push/test_jwt \
	tests/unit/push/test_note \
	tests/unit/push/test_response \
	tests/unit/push/test_wake \
	tests/unit/queue/test_receipts \
	tests/unit/queue/test_validate

INTEGRATION_TESTS := \
	tests/integration/test_backpressure \
	tests/integration/test_cli \
	tests/faults/test_faults \
	tests/faults/test_receipt_faults \
	tests/integration/test_daemon \
	tests/integration/test_ferryctl \
	tests/integration/test_gateway \
	tests/integration/test_hardening \
	tests/integration/test_messages \
	tests/integration/test_migrate \
	tests/integration/test_offline \
	tests/integration/test_push_http \
	tests/integration/test_mock_push \
	tests/integration/test_push_senders \
	tests/integration/test_push \
	tests/integration/test_push_faults \
	tests/integration/test_push_api \
	tests/integration/test_receipts \
	tests/integration/test_metrics \
	tests/integration/test_secrets \
	tests/integration/test_store \
	tests/integration/test_store_allocfail \
	tests/integration/test_admin \
	tests/integration/test_ui

# The validator of answers against admin/openapi.yaml, on its own for its unit test.
OPENAPI_SRCS := \
	tests/integration/openapi.c \
	tests/integration/openapi_doc.c \
	tests/integration/openapi_yaml.c

TEST_SUPPORT_SRCS := \
	tests/integration/harness.c \
	tests/integration/mockenv.c \
	$(OPENAPI_SRCS) \
	tests/integration/rawdev.c \
	tests/integration/storeclient.c \
	tests/integration/webdriver.c

# libFuzzer harnesses: tests/fuzz/NAME.c, seeds in tests/fuzz/corpus/NAME/.
FUZZ_TARGETS := \
	fuzz_admin_routes \
	fuzz_config \
	fuzz_proto \
	fuzz_push_response \
	fuzz_service_account

FUZZ_SECONDS ?= 20

# ---- object lists per build flavour -------------------------------------------

rel_obj = $(patsubst %.c,build/rel/%.o,$(1))
asan_obj = $(patsubst %.c,build/asan/%.o,$(1))

REL_LIB_OBJS := $(call rel_obj,$(LIB_SRCS) $(GEN_SRCS))
ASAN_LIB_OBJS := $(call asan_obj,$(LIB_SRCS) $(GEN_SRCS))

.PHONY: all test check-faults check-long unit integration check fuzz run install uninstall clean deps docs bench
.DEFAULT_GOAL := all
.SECONDARY:

all: bin/ferryd bin/ferry-client bin/ferryctl

bin/ferryd: $(REL_LIB_OBJS) $(call rel_obj,$(MAIN_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

bin/ferry-client: $(call rel_obj,$(CLIENT_SRCS) $(CLI_SRCS) $(CLIENT_DEPS_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

build/asan/ferry-client: $(call asan_obj,$(CLIENT_SRCS) $(CLI_SRCS) $(CLIENT_DEPS_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

bin/ferryctl: $(call rel_obj,$(FERRYCTL_SRCS) $(FERRYCTL_DEPS_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

build/asan/ferryctl: $(call asan_obj,$(FERRYCTL_SRCS) $(FERRYCTL_DEPS_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

build/asan/ferryd: $(ASAN_LIB_OBJS) $(call asan_obj,$(MAIN_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

build/tsan/ferryd: $(patsubst %.c,build/tsan/%.o,$(LIB_SRCS) $(GEN_SRCS) $(MAIN_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(TSAN_CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

build/tsan/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC      $< (tsan)"
	$(Q)$(CC) $(BASE_CFLAGS) $(TSAN_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

build/tsan/build/gen/%.o: build/gen/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(BASE_CFLAGS) $(TSAN_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

build/rel/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC      $<"
	$(Q)$(CC) $(BASE_CFLAGS) $(REL_CFLAGS) $(PKG_CFLAGS) $(CFLAGS) -c -o $@ $<

build/asan/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC      $< (asan)"
	$(Q)$(CC) $(BASE_CFLAGS) $(ASAN_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

# The migrations are compiled in, so a binary always carries its own schema.
build/gen/migrations.c: scripts/embed-sql.sh $(SQL_FILES)
	@mkdir -p $(@D)
	@echo "  GEN     $@"
	$(Q)sh scripts/embed-sql.sh $(SQL_FILES) > $@.tmp && mv $@.tmp $@

# So is the dashboard page (GET /ui), served as it is.
build/gen/ui_page.c: scripts/embed-file.sh admin/ui/dashboard.html
	@mkdir -p $(@D)
	@echo "  GEN     $@"
	$(Q)sh scripts/embed-file.sh admin/admin_int.h admin_ui_page admin/ui/dashboard.html \
		> $@.tmp && mv $@.tmp $@

build/rel/build/gen/%.o: build/gen/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(BASE_CFLAGS) $(REL_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

build/asan/build/gen/%.o: build/gen/%.c
	@mkdir -p $(@D)
	$(Q)$(CC) $(BASE_CFLAGS) $(ASAN_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

# ---- tests --------------------------------------------------------------------

TEST_BINS := $(addprefix build/asan/,$(UNIT_TESTS) $(INTEGRATION_TESTS))

build/asan/tests/unit/client/test_client: build/asan/tests/unit/client/test_client.o \
		$(call asan_obj,$(CLIENT_SRCS) client/cli_util.c) $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

# The shared tables alone, with the test's own clock (a link seam).
build/asan/tests/unit/gateway/test_presence: build/asan/tests/unit/gateway/test_presence.o \
		build/asan/gateway/presence.o
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

# The validator alone, against documents of its own and admin/openapi.yaml.
build/asan/tests/unit/admin/test_openapi: build/asan/tests/unit/admin/test_openapi.o \
		$(call asan_obj,$(OPENAPI_SRCS))
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(YAML_LIBS) $(CMOCKA_LIBS)

# Allocation-failure tests: every malloc, calloc, realloc, reallocarray,
# strdup and strndup in ferry's objects goes through tests/support/allocfail.c.
ALLOCFAIL_LDFLAGS := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=reallocarray \
	-Wl,--wrap=strdup,--wrap=strndup

build/asan/tests/unit/gateway/test_codec_allocfail: \
		build/asan/tests/unit/gateway/test_codec_allocfail.o \
		build/asan/tests/support/allocfail.o $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $(ALLOCFAIL_LDFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

build/asan/tests/integration/test_store_allocfail: \
		build/asan/tests/integration/test_store_allocfail.o \
		build/asan/tests/support/allocfail.o \
		$(call asan_obj,$(TEST_SUPPORT_SRCS) $(CLIENT_SRCS)) $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) $(ALLOCFAIL_LDFLAGS) -o $@ $^ $(PKG_LIBS) $(YAML_LIBS) \
		$(CMOCKA_LIBS)

build/asan/tests/unit/%: build/asan/tests/unit/%.o $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS) $(CMOCKA_LIBS)

# Its scripted HTTP/2 server links libnghttp2 (curl's HTTP/2 library).
build/asan/tests/integration/test_push_http: build/asan/tests/integration/test_push_http.o \
		$(call asan_obj,$(TEST_SUPPORT_SRCS) $(CLIENT_SRCS)) $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS) $(YAML_LIBS) $(CMOCKA_LIBS) -lnghttp2

# The fault suite (tests/faults/, docs/internals/faults.md): its shared
# recorder and checker, the integration harness, libferry.
build/asan/tests/faults/%: build/asan/tests/faults/%.o build/asan/tests/faults/faults.o \
		$(call asan_obj,$(TEST_SUPPORT_SRCS) $(CLIENT_SRCS)) $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS) $(YAML_LIBS) $(CMOCKA_LIBS)

build/asan/tests/integration/%: build/asan/tests/integration/%.o \
		$(call asan_obj,$(TEST_SUPPORT_SRCS) $(CLIENT_SRCS)) $(ASAN_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(PKG_LIBS) $(YAML_LIBS) $(CMOCKA_LIBS)

# The mock push providers (tests/mock/README.md), HTTP/2 servers of their own.
MOCK_SUPPORT_SRCS := \
	tests/mock/h2srv.c \
	tests/mock/jwt.c \
	tests/mock/mock.c

MOCK_BINS := \
	build/asan/tests/mock/mock_apns \
	build/asan/tests/mock/mock_fcm

MOCK_LIBS = $(shell pkg-config --libs libnghttp2 openssl jansson 2>/dev/null)

$(MOCK_BINS): build/asan/tests/mock/%: build/asan/tests/mock/%.o \
		$(call asan_obj,$(MOCK_SUPPORT_SRCS))
	@echo "  LD      $@"
	$(Q)$(CC) $(ASAN_CFLAGS) -o $@ $^ $(MOCK_LIBS)

build/asan/tests/integration/test_mock_push: | $(MOCK_BINS)
build/asan/tests/integration/test_push_senders: | $(MOCK_BINS)
build/asan/tests/integration/test_push: | $(MOCK_BINS)
build/asan/tests/integration/test_push_faults: | $(MOCK_BINS)
build/asan/tests/integration/test_push_api: | $(MOCK_BINS)
build/asan/tests/integration/test_secrets: | $(MOCK_BINS)
build/asan/tests/integration/test_ferryctl: | build/asan/ferryctl

# ---- fuzzing (clang, libFuzzer + ASan + UBSan) ---------------------------------

FUZZ_CC ?= clang
# Undefined behaviour stops a fuzzer like a crash: left recoverable, UBSan
# only prints, the run goes on, and run-fuzz.sh reports success.
FUZZ_CFLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
	-fno-sanitize-recover=undefined
FUZZ_BINS := $(addprefix build/fuzz/,$(FUZZ_TARGETS))

build/fuzz/obj/%.o: %.c
	@mkdir -p $(@D)
	@echo "  CC      $< (fuzz)"
	$(Q)$(FUZZ_CC) $(BASE_CFLAGS) $(FUZZ_CFLAGS) $(PKG_CFLAGS) -c -o $@ $<

FUZZ_LIB_OBJS := $(patsubst %.c,build/fuzz/obj/%.o,$(LIB_SRCS) $(GEN_SRCS))

build/fuzz/%: build/fuzz/obj/tests/fuzz/%.o $(FUZZ_LIB_OBJS)
	@echo "  LD      $@"
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(PKG_LIBS)

# The admin routes run against stubs of the registry (a link seam).
build/fuzz/fuzz_admin_routes: build/fuzz/obj/tests/fuzz/fuzz_admin_routes.o \
		$(filter-out %/queue/registry.o,$(FUZZ_LIB_OBJS))
	@echo "  LD      $@"
	$(Q)$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -o $@ $^ $(PKG_LIBS)

# Each harness runs for FUZZ_SECONDS on a scratch copy of its seed corpus.
fuzz: deps
	$(Q)$(MAKE) --no-print-directory $(FUZZ_BINS)
	$(Q)sh scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BINS)

deps:
	$(Q)sh scripts/deps.sh

# The tests need a browser too (tests/integration/test_ui); make run does not.
.PHONY: deps-test
deps-test:
	$(Q)sh scripts/deps.sh test

# Each step is its own make so that deps.sh runs before pkg-config is asked.
# The fuzzers run last, for FUZZ_TEST_SECONDS each: a smoke run on every
# commit; `make fuzz` runs them longer.
FUZZ_TEST_SECONDS ?= 10
# Tests that drive a daemon run twice: once against the ASan build, once
# against a ThreadSanitizer build (the workers, the admin threads).
TSAN_TESTS := tests/integration/test_admin tests/integration/test_gateway \
	tests/integration/test_offline tests/integration/test_messages tests/integration/test_push \
	tests/integration/test_push_faults tests/integration/test_push_api \
	tests/integration/test_receipts tests/integration/test_metrics tests/integration/test_secrets
test: deps-test
	$(Q)$(MAKE) --no-print-directory build/asan/ferryd build/asan/ferry-client build/asan/ferryctl \
		build/tsan/ferryd $(TEST_BINS) $(FUZZ_BINS)
	$(Q)FUZZ_SECONDS=$(FUZZ_TEST_SECONDS) FERRY_TSAN_FERRYD=build/tsan/ferryd \
		FERRY_TSAN_TESTS="$(addprefix build/asan/,$(TSAN_TESTS))" sh scripts/run-tests.sh \
		$(addprefix build/asan/,$(UNIT_TESTS)) -- \
		$(addprefix build/asan/,$(INTEGRATION_TESTS)) -- $(FUZZ_BINS)

# The fault suite in its long form (FERRY_FAULTS_LONG: 100 kills, 20
# PostgreSQL restarts, a 3-minute outage...); `make test` runs the short one.
# check-long is its old name.
check-faults check-long: deps
	$(Q)$(MAKE) --no-print-directory build/asan/ferryd build/asan/tests/faults/test_faults \
		build/asan/tests/faults/test_receipt_faults
	$(Q)FERRY_FAULTS_LONG=1 sh scripts/run-tests.sh -- build/asan/tests/faults/test_faults \
		build/asan/tests/faults/test_receipt_faults

unit: build/asan/ferryd $(addprefix build/asan/,$(UNIT_TESTS))
	$(Q)sh scripts/run-tests.sh $(addprefix build/asan/,$(UNIT_TESTS)) --

run: deps
	$(Q)$(MAKE) --no-print-directory bin/ferryd bin/ferry-client
	$(Q)sh scripts/run-dev.sh

# ---- benchmarks (docs/bench.md) ---------------------------------------------
# Release-built tools; `make bench` runs them against a release bin/ferryd and
# a throwaway PostgreSQL cluster, printing key=value figures and tables.

BENCH_TOOLS := bin/ferry-bench build/bench/bench_proto build/bench/bench_insert \
	build/bench/bench_push build/bench/mock_apns

FERRY_BENCH_SRCS := \
	tools/bench_gen.c \
	tools/bench_load.c \
	tools/bench_offline.c \
	tools/bench_receipts.c \
	tools/bench_scen.c \
	tools/bench_scen_store.c \
	tools/bench_util.c \
	tools/ferry-bench.c

bin/ferry-bench: $(call rel_obj,$(FERRY_BENCH_SRCS) $(CLIENT_SRCS) $(CLIENT_DEPS_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm -lpthread

# The plain-INSERT ceiling of the offline store's figures (libpq only).
build/bench/bench_insert: $(call rel_obj,tools/bench_insert.c tools/bench_util.c)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm -lpthread

# APNs pushes/s through push/apns.c to the mock, against h2load (tools/bench_push.c).
build/bench/bench_push: $(call rel_obj,tools/bench_push.c tools/bench_util.c) $(REL_LIB_OBJS)
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS) -lm -lpthread

# The mock APNs, optimised, for bench_push (the tests use the ASan one).
build/bench/mock_apns: $(call rel_obj,tests/mock/mock_apns.c $(MOCK_SUPPORT_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(MOCK_LIBS)

build/bench/bench_proto: $(call rel_obj,tools/bench_proto.c $(CLIENT_DEPS_SRCS))
	@mkdir -p $(@D)
	@echo "  LD      $@"
	$(Q)$(CC) $(REL_CFLAGS) $(CFLAGS) $(LDFLAGS) -o $@ $^ $(PKG_LIBS)

bench: deps
	$(Q)$(MAKE) --no-print-directory bin/ferryd $(BENCH_TOOLS)
	$(Q)sh scripts/run-bench.sh

# docs/configuration.md is generated from the config table; `make test` fails
# when the committed file differs.
docs: bin/ferryd
	$(Q)bin/ferryd config-reference > docs/configuration.md

ALL_C := $(shell git ls-files -co --exclude-standard '*.c' '*.h' 2>/dev/null)
check:
	$(Q)clang-format --dry-run --Werror $(ALL_C)
	$(Q)sh scripts/check-banned.sh $(filter %.c,$(ALL_C))

install: bin/ferryd bin/ferry-client bin/ferryctl
	install -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(SYSCONFDIR)/ferry $(DESTDIR)$(DATADIR)/doc/ferry
	install -m 0755 bin/ferryd $(DESTDIR)$(BINDIR)/ferryd
	install -m 0755 bin/ferryctl $(DESTDIR)$(BINDIR)/ferryctl
	install -m 0644 docs/ferry.ini.example $(DESTDIR)$(SYSCONFDIR)/ferry/ferry.ini.example
	install -m 0644 README.md docs/*.md admin/openapi.yaml $(DESTDIR)$(DATADIR)/doc/ferry/

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/ferryd $(DESTDIR)$(BINDIR)/ferry-client $(DESTDIR)$(BINDIR)/ferryctl \
		$(DESTDIR)$(SYSCONFDIR)/ferry/ferry.ini.example
	rm -rf $(DESTDIR)$(DATADIR)/doc/ferry

clean:
	rm -rf build bin

-include $(shell find build -name '*.d' 2>/dev/null)
