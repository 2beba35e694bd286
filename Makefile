# jam-flow developer entry points. `make demo` and `make test` each set up .venv on first use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# The torch pair measured on the CPU machines (CUDA build that runs on CPU); the package supports torch 2.11-2.14.
TORCH  ?= torch==2.14.1 torchaudio==2.11.0
DATA   ?= data/synth
RUN    ?= runs/tiny
# The demo's corpus: one voice, one 2-4-word sentence a clip, a 30-word world (the recipe's stage-1 corpus)
DEMO_DATA ?= data/speech_world
WORLD  := --words configs/speech/small_world_words.txt --voices en-us --rate 160 --pitch 50 --sentences-per-clip 1

.PHONY: setup demo synth train test test-all test-slow lint format bench synth-recipe synth-recipe-audio \
	synth-recipe-speech canary clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH) -e ".[dev]"
	# Parity references (tests only): installed without their heavy optional deps (see docs/development.md).
	$(BIN)/pip install -q --no-deps f5-tts==1.1.22 mimic-head==0.1.5
	touch $@

setup: $(BIN)/.installed

# The main job: build the offline small-world corpus, then train the joint model configs/tiny.yaml on it (about
# 2 minutes for the corpus and 25 minutes of training on 2 cores; it then says words of its world and moves the lips with them).
demo: setup
	test -f $(DEMO_DATA)/manifest.jsonl || $(BIN)/jam-flow synth-corpus --out $(DEMO_DATA) --n-clips 4000 --seed 0 $(WORLD)
	$(BIN)/jam-flow fit --config configs/tiny.yaml --data.data_dir $(DEMO_DATA) --trainer.default_root_dir $(RUN)
	@CKPT=$$(ls -td $(RUN)/lightning_logs/version_*/checkpoints/last.ckpt | head -1); \
	echo; echo "Trained: $$CKPT. Open the web demo (every task, in the browser) with:"; \
	echo "  $(BIN)/jam-flow demo --ckpt $$CKPT --port 7860    # then visit http://127.0.0.1:7860"

synth: setup
	$(BIN)/jam-flow synth-corpus --out $(DATA) --n-clips 1000 --seed 0

train: setup
	$(BIN)/jam-flow fit --config configs/tiny.yaml --data.data_dir $(DATA) --trainer.default_root_dir $(RUN)

# The default suite (CI runs exactly this): everything not marked slow or gpu.
test: setup
	$(BIN)/python -m pytest

test-slow: setup
	$(BIN)/python -m pytest -m slow

test-all: setup
	$(BIN)/python -m pytest -m "slow or not slow"

lint: setup
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

format: setup
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/ruff check --fix src tests benchmarks

bench: setup
	$(BIN)/python benchmarks/attention.py --device cpu --seconds 5 20 --json benchmarks/results/attention_cpu.json
	$(BIN)/python benchmarks/train_step.py --device cpu --json benchmarks/results/train_step_cpu.json
	$(BIN)/python benchmarks/sample.py --device cpu --size tiny paper --json benchmarks/results/sample_cpu.json
	$(BIN)/python benchmarks/inference.py --device cpu
	$(BIN)/python benchmarks/render.py --device cpu

# The learnability canary: a tiny Audio-DiT on a toy corpus where the text determines the mel must show a clear
# val/text_gain within 300 steps (a few minutes on 2 cores). Run it first after changing anything on the text path.
canary: setup
	$(BIN)/python -m jam_flow.recipes.canary --out runs/canary

synth-recipe: setup
	$(BIN)/python -m jam_flow.recipes.synth

# The speech recipe (issue 16): held-out-sentence corpora, the CER judge, a 2-hour CPU run, learning curves.
synth-recipe-audio: setup
	$(BIN)/python -m jam_flow.recipes.synth_audio

# The two-stage speech recipe (issue 26): stage-1 Audio-DiT (the F5-TTS stand-in) and Motion-DiT, then the joint
# model from both, on the small-world corpus; judge CER, dub timing, learning curves (results/synth_recipe_speech.json).
synth-recipe-speech: setup
	$(BIN)/python -m jam_flow.recipes.speech

clean:
	rm -rf runs lightning_logs .pytest_cache
