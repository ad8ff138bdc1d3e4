# lipsync: the two entry points are `make demo` and `make test`; both set up a fresh Debian 12
# machine first (scripts/setup.sh is idempotent, so later runs skip what is already there).
BUILD      ?= build
JOBS       ?= $(shell nproc)
PYTHON     ?= /usr/bin/python3
CMAKE_ARGS ?=
LIPSYNC    := $(BUILD)/tools/lipsync/lipsync
MODELS     := models
# The Windows x64 build: cross-compiled with MinGW-w64, its tests run under Wine.
BUILD_WIN  ?= build-windows

.PHONY: all setup configure build demo test image-test test-cpp test-python format clean \
        windows-build windows-test windows-package

all: build

setup:
	bash scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release $(CMAKE_ARGS)

configure: setup $(BUILD)/build.ninja

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# The demo model: a seeded random checkpoint in the original layout, exported like a real one.
$(MODELS)/demo.onnx $(MODELS)/demo_audio_encoder.onnx &: | build
	PYTHONPATH=python LIPSYNC_BIN=$(CURDIR)/$(LIPSYNC) $(PYTHON) -m lipsync.demo --out-dir $(MODELS)

# The trained demo model: it opens the demo avatar's mouth with the speech (lipsync.train_demo).
$(MODELS)/demo_trained.onnx: $(MODELS)/demo_audio_encoder.onnx python/lipsync/train_demo.py \
                             python/lipsync/demo_net.py python/lipsync/demo_avatar.py | build
	PYTHONPATH=python LIPSYNC_BIN=$(CURDIR)/$(LIPSYNC) $(PYTHON) -m lipsync.train_demo \
	  --out-dir $(MODELS)

# The demo avatar: synthetic frames (mouth closed) and landmarks imported with `lipsync avatar
# import`, with the trained model as its UNet.
$(MODELS)/demo_avatar/avatar.json: $(MODELS)/demo_trained.onnx $(MODELS)/demo_audio_encoder.onnx
	PYTHONPATH=python LIPSYNC_BIN=$(CURDIR)/$(LIPSYNC) $(PYTHON) -m lipsync.demo_avatar \
	  --out-dir $(MODELS) --model $(MODELS)/demo_trained.onnx \
	  --encoder $(MODELS)/demo_audio_encoder.onnx --mouth closed

demo: build $(MODELS)/demo.onnx $(MODELS)/demo_audio_encoder.onnx $(MODELS)/demo_avatar/avatar.json
	mkdir -p out
	$(LIPSYNC) info --model $(MODELS)/demo.onnx
	$(LIPSYNC) infer --model $(MODELS)/demo.onnx --face $(MODELS)/demo_face.png \
	  --audio $(MODELS)/demo_audio.npy --out out/demo_face_out.png
	$(LIPSYNC) bench --model $(MODELS)/demo.onnx --batch 1,4 --duration 5 --warmup 3 \
	  --json out/bench.json
	$(LIPSYNC) features --audio $(MODELS)/demo_speech.wav --encoder $(MODELS)/demo_audio_encoder.onnx \
	  --mel-out out/demo_mel.npy --out out/demo_audio_windows.npy
	$(LIPSYNC) render --avatar $(MODELS)/demo_avatar --audio $(MODELS)/demo_speech.wav \
	  --out out/demo.mp4 --batch 4
	@echo
	@echo "demo output image: out/demo_face_out.png"
	@echo "benchmark figures: out/bench.json"
	@echo "audio features of models/demo_speech.wav: out/demo_audio_windows.npy"
	@echo "lip-synced demo video (the trained model opens the mouth with the speech): out/demo.mp4"

test: build windows-build
	cd $(BUILD) && LIPSYNC_BIN=$(CURDIR)/$(LIPSYNC) ctest -LE 'gpu|image' --output-on-failure -j 2
	cd $(BUILD_WIN) && ctest --output-on-failure -j 2

$(BUILD_WIN)/build.ninja:
	cmake -S . -B $(BUILD_WIN) -G Ninja -DCMAKE_BUILD_TYPE=Release \
	  -DCMAKE_TOOLCHAIN_FILE=$(CURDIR)/cmake/mingw-w64.cmake $(CMAKE_ARGS)

windows-build: setup $(BUILD_WIN)/build.ninja
	cmake --build $(BUILD_WIN) -j $(JOBS)

# The Windows tests alone: unit, graph and `lipsync.exe` end to end, under Wine.
windows-test: windows-build
	cd $(BUILD_WIN) && ctest --output-on-failure -j 2

# out/lipsync-windows-x64.zip: lipsync.exe, its DLLs, setup.ps1 and README-windows.txt.
windows-package: windows-build
	bash scripts/windows-package.sh $(BUILD_WIN) out/lipsync-windows-x64.zip

# The CPU image built from deploy/docker/Dockerfile, started and called; prints its build time and
# size. Minutes; needs root, buildah and debootstrap (bash scripts/setup.sh --image). CI runs it.
image-test: build
	cd $(BUILD) && LIPSYNC_BIN=$(CURDIR)/$(LIPSYNC) ctest -L image --output-on-failure -V

format:
	find include src tools tests bench -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.cuh' \
	  | xargs clang-format -i

clean:
	rm -rf $(BUILD) $(BUILD_WIN) out
