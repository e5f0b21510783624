# Every target sets itself up on a fresh Debian 12 machine (as root): apt packages, the
# virtualenv, the default model. Run `make help` for the list.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
# whisper.cpp's build for this CPU is kept here as a wheel (deploy/build-whisper.sh keys its
# folder by version, flags, compiler and CPU), so `make install` and its test install that
# wheel instead of compiling whisper.cpp a second time.
export PYWHISPERCPP_WHEELS ?= $(abspath $(STAMPS))/pywhispercpp-wheels
MODEL ?= tiny.en
QUANT ?= q8_0
# What the recorder decodes with ([transcriber] quant): less memory than q8_0.
RECORDER_QUANT ?= q5_1
# libsndfile1: soundfile; libportaudio2: sounddevice; libsystemd-dev + pkg-config: systemd-python's
# build; pulseaudio, pulseaudio-utils, libasound2-plugins: the virtual capture device of the tests and
# the demo; systemd: systemd-analyze for the unit's tests; build-essential: whisper.cpp's build;
# chromium, chromium-driver: the web page's browser tests.
APT_PACKAGES := build-essential systemd libsndfile1 libportaudio2 libsystemd-dev pkg-config pulseaudio pulseaudio-utils libasound2-plugins chromium chromium-driver

.PHONY: help test demo bench deps venv model clean
help:
	@echo "make test   set everything up and run the test suite"
	@echo "make demo   set everything up, play a recorded meeting into the running appliance on a"
	@echo "            virtual microphone, and print the path of the delivered email last"
	@echo "make bench  set everything up and write docs/benchmarks.md"
	@echo "make install    install the service on this machine (root; DESTDIR= stages it instead)"
	@echo "make uninstall  remove it again, keeping config and state (PURGE=1: those too)"

$(STAMPS)/apt:
	@mkdir -p $(STAMPS)
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing apt packages: $$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@touch $@

# whisper.cpp is built here for this CPU first (deploy/build-whisper.sh), so the project's
# requirement on pywhispercpp is already met by that build, not by PyPI's generic wheel.
$(STAMPS)/venv: pyproject.toml $(STAMPS)/apt deploy/build-whisper.sh
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	deploy/build-whisper.sh $(VENV)
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

venv: $(STAMPS)/venv

model: $(STAMPS)/venv
	$(BIN)/appliance models install $(MODEL) --quant f16
	$(BIN)/appliance models install $(MODEL) --quant $(QUANT)
	$(BIN)/appliance models install $(MODEL) --quant $(RECORDER_QUANT)
	$(BIN)/appliance models install silero-vad
	$(BIN)/appliance models install speakers

test: model
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest --durations=25

demo: model
	rm -rf .demo
	$(BIN)/python -m tools.demo --workdir .demo

# Each step rewrites only its own part of docs/benchmarks.md; run on an otherwise idle machine.
bench: model
	$(BIN)/python -m benchmarks.run --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.interleaved --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.frontend --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.parallel --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.timings --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.daemon --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.faults --output docs/benchmarks.md
	$(BIN)/python -m benchmarks.api --output docs/benchmarks.md

clean:
	rm -rf $(VENV) $(STAMPS) .demo models/*.bin models/*.json models/*.onnx models/*.onnx.LICENSE models/*.npz models/*.npz.LICENSE

# The appliance as a systemd service: deploy/install.sh and deploy/uninstall.sh read DESTDIR,
# PREFIX, APT, BUILD_WHISPER, GPIO, SYSTEMD, PURGE (see their headers) from the command line.
.PHONY: install uninstall
install:
	MODEL='$(MODEL)' QUANT='$(RECORDER_QUANT)' PYTHON='$(PYTHON)' ./deploy/install.sh

uninstall:
	./deploy/uninstall.sh
