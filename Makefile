# Tessera — the two README commands and their parts. Every target that builds installs what it needs first.
BUILD_DIR ?= build
JOBS ?= 2
BUILD_TYPE ?= Release
TESSERA := $(BUILD_DIR)/tools/cli/tessera
DEMO_OUT ?= out/demo.png
DEMO_PROMPT ?= a photo of an astronaut riding a horse on mars

.PHONY: all deps configure build test demo bench benchmarks clean claude codex clean-ai

all: build

deps:
	@tools/setup/install_deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) > /dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS)

## The main job: Stable Diffusion text2image on the embedded default model (tiny-sd), writes a PNG.
demo: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target tessera
	@mkdir -p $(dir $(DEMO_OUT))
	@$(TESSERA) run recipes/sd/auto.yaml --set prompt="$(DEMO_PROMPT)" --set seed=42 --out $(DEMO_OUT)

## Build everything and pass every test (tests labelled "slow" run with `ctest -L slow`).
test: build
	@cd $(BUILD_DIR) && ctest --output-on-failure -j$(JOBS) -LE slow

## The benchmark programs (tools/bench), outside the default build.
benchmarks: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target benchmarks

bench: configure
	@cmake --build $(BUILD_DIR) -j$(JOBS) --target tessera_bench_engine
	@$(BUILD_DIR)/tools/bench/tessera_bench_engine --benchmark_repetitions=3 --benchmark_report_aggregates_only=true

clean:
	@rm -rf $(BUILD_DIR)

## Agent guidance: CLAUDE.md / AGENTS.md and skills as symlinks into .ai/ (git-ignored).
claude:
	@ln -sfn .ai/AGENTS.md CLAUDE.md
	@mkdir -p .claude && ln -sfn ../.ai/skills .claude/skills
	@echo "CLAUDE.md -> .ai/AGENTS.md, .claude/skills -> .ai/skills"

codex:
	@ln -sfn .ai/AGENTS.md AGENTS.md
	@mkdir -p .agents && ln -sfn ../.ai/skills .agents/skills
	@echo "AGENTS.md -> .ai/AGENTS.md, .agents/skills -> .ai/skills"

clean-ai:
	@rm -f CLAUDE.md AGENTS.md .claude/skills .agents/skills
	@rmdir .claude .agents 2>/dev/null || true
