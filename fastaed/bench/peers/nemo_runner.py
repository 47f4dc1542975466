"""NeMo's side of the Canary interop checks, run by the NeMo peer's own Python (``.venv-nemo/bin/python``).

NeMo pins many packages, so it never shares a virtual environment with fastaed: this file imports neither
fastaed nor anything NeMo lacks, and talks to fastaed only through files (JSON specs in, ``.nemo``, ``.npz``
and JSON out). Commands::

    python nemo_runner.py build SPEC.json OUT.nemo     # a random Canary model, every tensor perturbed
    python nemo_runner.py reference MODEL.nemo REQUEST.json OUT.npz OUT.json
    python nemo_runner.py transcribe MODEL.nemo REQUEST.json OUT.json
    python nemo_runner.py bench MODEL.nemo REQUEST.json OUT.json

Pitfalls handled here (measured with nemo-toolkit 3.0.0): ``transcribe()`` and the greedy decoder put the
encoder and decoder back in training mode although ``model.training`` reads False, so ``eval()`` is called
again after each; a default-initialised model (LayerNorm 1/0, zero biases, batch norm 0/1) would hide a
missing bias in a port, so ``build`` perturbs every parameter and buffer.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Special tokens of a test model: NeMo's defaults come first (CanaryTokenizer.build_special_tokenizer
# prepends them); then the ones each prompt format needs.
CANARY_SPECIALS = ["<|transcribe|>", "<|translate|>"]
CANARY2_SPECIALS = [
    "<|startofcontext|>", "<|emo:undefined|>", "<|emo:neutral|>", "<|itn|>", "<|noitn|>", "<|timestamp|>",
    "<|notimestamp|>", "<|diarize|>", "<|nodiarize|>",
]  # fmt: skip


def _quiet() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    logging.disable(logging.WARNING)
    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(logging.ERROR)


def _train_bpe(texts: list[str], out_dir: Path, vocab_size: int) -> None:
    import sentencepiece as spm

    out_dir.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_prefix=str(out_dir / "tokenizer"), vocab_size=vocab_size,
        model_type="bpe", character_coverage=1.0, hard_vocab_limit=False, minloglevel=2, num_threads=1,
    )  # fmt: skip
    # NeMo's tokenizer folders also hold vocab.txt (one piece per line).
    pieces = [line.split("\t")[0] for line in (out_dir / "tokenizer.vocab").read_text().splitlines()]
    (out_dir / "vocab.txt").write_text("\n".join(pieces) + "\n")


def build(spec_path: str, out_path: str) -> None:
    """A random ``EncDecMultiTaskModel`` from SPEC (widths, depths, prompt format, tokenizer texts), every
    parameter and buffer perturbed, saved as ``.nemo``."""
    _quiet()
    import torch
    from nemo.collections.asr.models import EncDecMultiTaskModel
    from nemo.collections.common.tokenizers.canary_tokenizer import CanaryTokenizer
    from omegaconf import OmegaConf

    spec = json.loads(Path(spec_path).read_text())
    torch.manual_seed(spec.get("seed", 0))
    fmt = spec["prompt_format"]
    langs = spec.get("langs", ["en"])
    work = Path(tempfile.mkdtemp(prefix="nemo-build-"))
    specials = CANARY_SPECIALS if fmt == "canary" else CANARY2_SPECIALS
    specials = specials + [f"<|{lang}|>" for lang in langs] + spec.get("extra_specials", [])
    CanaryTokenizer.build_special_tokenizer(specials, work / "spl_tokens", force_rebuild=True)
    lang_cfg = {"spl_tokens": {"dir": str(work / "spl_tokens"), "type": "bpe"}}
    for lang in langs:
        _train_bpe(spec["texts"], work / lang, spec.get("bpe_vocab", 64))
        lang_cfg[lang] = {"dir": str(work / lang), "type": "bpe"}
    enc, dec = spec["encoder"], spec["decoder"]
    n_mels = spec.get("n_mels", 80)
    cfg = {
        "sample_rate": 16000,
        "prompt_format": fmt,
        "model_defaults": {
            "asr_enc_hidden": enc["d_model"], "lm_enc_hidden": dec["hidden"], "lm_dec_hidden": dec["hidden"],
        },
        "tokenizer": {
            "dir": None, "type": "agg", "langs": lang_cfg,
            "custom_tokenizer": {
                "_target_": "nemo.collections.common.tokenizers.canary_tokenizer.CanaryTokenizer",
                "tokenizer": None,
            },
        },
        "preprocessor": {
            "_target_": "nemo.collections.asr.modules.AudioToMelSpectrogramPreprocessor",
            "sample_rate": 16000, "normalize": "per_feature", "window_size": 0.025, "window_stride": 0.01,
            "window": "hann", "features": n_mels, "n_fft": 512, "log": True, "frame_splicing": 1,
            "dither": 1e-5, "pad_to": spec.get("pad_to", 0), "pad_value": 0.0,
        },
        "spec_augment": None,
        "encoder": {
            "_target_": "nemo.collections.asr.modules.ConformerEncoder", "feat_in": n_mels, "feat_out": -1,
            "n_layers": enc["n_layers"], "d_model": enc["d_model"], "subsampling": "dw_striding",
            "subsampling_factor": 8, "subsampling_conv_channels": enc.get("subsampling_channels", 256),
            "causal_downsampling": False, "ff_expansion_factor": enc.get("ff_expansion", 4),
            "self_attention_model": "rel_pos", "n_heads": enc["n_heads"], "att_context_size": [-1, -1],
            "xscaling": enc.get("xscaling", True), "untie_biases": True, "pos_emb_max_len": 5000,
            "conv_kernel_size": enc.get("conv_kernel", 9), "conv_norm_type": "batch_norm",
            "dropout": 0.1, "dropout_pre_encoder": 0.1, "dropout_emb": 0.0, "dropout_att": 0.1,
        },
        "transf_encoder": {
            "_target_": "nemo.collections.asr.modules.transformer.transformer_encoders.TransformerEncoder",
            "num_layers": 0, "hidden_size": dec["hidden"], "inner_size": 4 * dec["hidden"],
            "num_attention_heads": dec["heads"],
        },
        "transf_decoder": {
            "_target_": "nemo.collections.asr.modules.transformer.get_nemo_transformer",
            "model_name": None, "pretrained": False, "encoder": None, "pre_ln_final_layer_norm": True,
            "config_dict": {
                "max_sequence_length": dec.get("max_sequence_length", 512), "num_token_types": 0,
                "embedding_dropout": 0.1, "learn_positional_encodings": False, "hidden_size": dec["hidden"],
                "inner_size": dec.get("inner_size", 4 * dec["hidden"]), "num_layers": dec["layers"],
                "num_attention_heads": dec["heads"], "ffn_dropout": 0.1, "attn_score_dropout": 0.1,
                "attn_layer_dropout": 0.1, "hidden_act": dec.get("hidden_act", "relu"), "pre_ln": True,
                "vocab_size": None,
            },
        },
        "head": {
            "_target_": "nemo.collections.asr.parts.submodules.token_classifier.TokenClassifier",
            "num_layers": 1, "activation": "relu", "log_softmax": True, "hidden_size": dec["hidden"],
            "num_classes": None, "dropout": 0.0, "use_transformer_init": True,
        },
        "decoding": _decoding_config(spec.get("decoding", {"strategy": "greedy"})),
        "loss": {
            "_target_": "nemo.collections.common.losses.smoothed_cross_entropy.SmoothedCrossEntropyLoss",
            "label_smoothing": 0.0, "pad_id": None,
        },
    }  # fmt: skip
    model = EncDecMultiTaskModel(cfg=OmegaConf.create(cfg), trainer=None)
    perturb(model, spec.get("perturb", 0.1), spec.get("perturb_positions", True))
    # A random model ignores the audio (its subsampling output is mostly biases, its cross-attention a flat
    # average) and repeats one token; louder subsampling weights and sharper, louder cross-attention make the
    # tokens depend on the clip, so equal tokens mean something.
    with torch.no_grad():
        for module in model.encoder.pre_encode.modules():
            if isinstance(module, torch.nn.Conv2d | torch.nn.Linear):
                module.weight.mul_(spec.get("signal_gain", 1.0))
        for layer in model.transf_decoder._decoder.layers:
            cross = layer.second_sub_layer
            for net in (cross.query_net, cross.key_net, cross.value_net, cross.out_projection):
                net.weight.mul_(spec.get("cross_gain", 1.0))
    with torch.no_grad():  # NeMo cannot decode the padding ids past its tokenizer (KeyError): never emit them
        model.log_softmax.mlp.layer0.bias[model.tokenizer.vocab_size :] = -1e4
    eos_bias = spec.get("eos_bias")
    if eos_bias is not None:  # shortens a random model's outputs (benchmarks: realistic output lengths)
        with torch.no_grad():
            model.log_softmax.mlp.layer0.bias[model.tokenizer.eos_id] += eos_bias
    model.save_to(out_path)
    print(json.dumps({"nemo": out_path, "vocab_size": model.tokenizer.vocab_size}))


def _decoding_config(partial: dict) -> dict:
    """A partial ``decoding:`` block merged over ``MultiTaskDecodingConfig``'s defaults (NeMo requires the
    whole structure)."""
    from nemo.collections.asr.parts.submodules.multitask_decoding import MultiTaskDecodingConfig
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(OmegaConf.structured(MultiTaskDecodingConfig()), partial)
    return OmegaConf.to_container(merged)


def perturb(model, scale: float, positions: bool) -> None:
    """Add noise to every floating tensor of the state dict (parameters and buffers): LayerNorm weights move
    off 1, biases off 0, batch-norm statistics off 0/1 (variances stay positive)."""
    import torch

    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if not t.is_floating_point():
                continue
            if name.endswith("pos_enc") and not positions:
                continue
            noise = torch.randn_like(t)
            if name.endswith("running_var"):
                t.mul_(torch.exp(scale * noise))
            elif name.endswith(("preprocessor.featurizer.window", "preprocessor.featurizer.fb")):
                t.mul_(1 + 0.1 * scale * noise)  # the front end keeps its shape, moves a little
            elif name.endswith("pos_enc"):
                t.add_(0.1 * scale * noise * t.abs().mean())
            else:
                spread = t.std().item() if t.numel() > 1 and t.std().item() > 0 else 1.0
                t.add_(scale * max(spread, 0.02) * noise)


def _restore(path: str, threads: int | None = None):
    _quiet()
    import torch
    from nemo.collections.asr.models import EncDecMultiTaskModel

    if threads:
        torch.set_num_threads(threads)
    model = EncDecMultiTaskModel.restore_from(path, map_location="cpu")
    return model.eval()


def _load(path: str):
    import soundfile as sf
    import torch

    audio, sr = sf.read(path, dtype="float32")
    assert sr == 16000, f"{path}: {sr} Hz"
    return torch.from_numpy(audio)


def _prompt_slots(model, request: dict) -> dict:
    slots = {"source_lang": request.get("lang", "en"), "target_lang": request.get("lang", "en")}
    slots["pnc"] = "yes" if request.get("pnc", True) else "no"
    if model.prompt_format == "canary":
        slots["task"] = "asr"
    else:  # canary2's other slots, at their transcription defaults
        slots |= {"decodercontext": "", "emotion": "<|emo:undefined|>", "itn": "no", "timestamp": "no",
                  "diarize": "no"}  # fmt: skip
    return slots


def _prompt_ids(model, request: dict) -> list[int]:
    turns = [{"role": "user", "slots": _prompt_slots(model, request)}]
    return model.prompt.encode_dialog(turns=turns)["context_ids"].tolist()


def reference(model_path: str, request_path: str, out_npz: str, out_json: str) -> None:
    """Features, encoder states and teacher-forced log-probs of each clip, alone and as one padded batch;
    then greedy ``transcribe()`` tokens and text at each requested batch size."""
    import torch

    request = json.loads(Path(request_path).read_text())
    model = _restore(model_path, request.get("threads"))
    prompt = _prompt_ids(model, request)
    arrays: dict[str, np.ndarray] = {}
    info: dict = {
        "prompt": prompt,
        "clips": [],
        "eos_id": model.tokenizer.eos_id,
        "pad_id": model.tokenizer.pad_id,
    }
    lang = request.get("lang", "en")
    waves = [_load(p) for p in request["audio"]]
    with torch.no_grad():
        for i, (wave, text) in enumerate(zip(waves, request["texts"], strict=True)):
            tokens = prompt + model.tokenizer.text_to_ids(text, lang) + [model.tokenizer.eos_id]
            tokens = tokens[: model.transf_decoder.max_sequence_length + 1]  # the decoder's positions
            sig, sig_len = wave[None], torch.tensor([len(wave)])
            feats, feat_len = model.preprocessor(input_signal=sig, length=sig_len)
            enc, enc_len = model.encoder(audio_signal=feats, length=feat_len)
            inp = torch.tensor([tokens[:-1]])
            log_probs, _, _, _ = model.forward(
                input_signal=sig, input_signal_length=sig_len, transcript=inp,
                transcript_length=torch.tensor([inp.shape[1]]),
            )  # fmt: skip
            arrays[f"feats_{i}"] = feats[0, :, : int(feat_len[0])].T.numpy()  # (T, F)
            arrays[f"enc_{i}"] = enc[0, :, : int(enc_len[0])].T.numpy()  # (T', D)
            arrays[f"logprobs_{i}"] = log_probs[0].numpy()  # (U, V)
            info["clips"].append({"tokens": tokens, "feat_len": int(feat_len[0]), "enc_len": int(enc_len[0])})
        # One padded batch: what padding does to NeMo's numbers (fastaed must give the same valid frames).
        lens = torch.tensor([len(w) for w in waves])
        batch = torch.zeros(len(waves), int(lens.max()))
        for i, w in enumerate(waves):
            batch[i, : len(w)] = w
        feats, feat_len = model.preprocessor(input_signal=batch, length=lens)
        enc, enc_len = model.encoder(audio_signal=feats, length=feat_len)
        for i in range(len(waves)):
            arrays[f"batch_enc_{i}"] = enc[i, :, : int(enc_len[i])].T.numpy()
    np.savez(out_npz, **arrays)
    _set_greedy(model, request)
    info["runs"] = {}
    for bs in request.get("batch_sizes", []):
        hyps = _transcribe(model, request["audio"], bs, request)
        info["runs"][str(bs)] = [{"tokens": h.y_sequence.tolist(), "text": h.text} for h in hyps]
    Path(out_json).write_text(json.dumps(info))


def _transcribe(model, paths: list[str], batch_size: int, request: dict):
    hyps = model.transcribe(
        paths, batch_size=batch_size, return_hypotheses=True, num_workers=0, verbose=False,
        **_prompt_slots(model, request),
    )  # fmt: skip
    model.eval()  # transcribe() leaves the encoder/decoder in training mode
    return hyps


def transcribe(model_path: str, request_path: str, out_json: str) -> None:
    """Greedy ``transcribe()`` of the clips at each requested batch size: token ids and text per clip."""
    request = json.loads(Path(request_path).read_text())
    model = _restore(model_path, request.get("threads"))
    _set_greedy(model, request)
    out: dict = {"prompt": _prompt_ids(model, request), "runs": {}}
    for bs in request.get("batch_sizes", [1]):
        hyps = _transcribe(model, request["audio"], bs, request)
        out["runs"][str(bs)] = [{"tokens": h.y_sequence.tolist(), "text": h.text} for h in hyps]
    Path(out_json).write_text(json.dumps(out))


def _set_greedy(model, request: dict) -> None:
    """Greedy decoding with the model's own length rule unless the request names one."""
    from omegaconf import open_dict

    cfg = model.cfg.decoding
    with open_dict(cfg):
        cfg.strategy = "greedy"
        if "max_generation_delta" in request:
            cfg.greedy.max_generation_delta = request["max_generation_delta"]
    model.change_decoding_strategy(cfg)


def bench(model_path: str, request_path: str, out_json: str) -> None:
    """Timed ``transcribe()`` (audio reading and features inside the timer, one untimed warm-up call) and
    decoder-only greedy decoding of precomputed encoder states, per batch size."""
    import torch

    request = json.loads(Path(request_path).read_text())
    threads = request["threads"]
    model = _restore(model_path, threads)
    _set_greedy(model, request)
    paths, repeats = request["audio"], request.get("repeats", 1)
    prompt = _prompt_ids(model, request)
    out: dict = {"threads": torch.get_num_threads(), "runs": {}}
    for bs in request["batch_sizes"]:
        _transcribe(model, paths[: min(bs, len(paths))], bs, request)  # warm-up
        best, hyps = float("inf"), None
        for _ in range(repeats):
            t0 = time.perf_counter()
            hyps = _transcribe(model, paths, bs, request)
            best = min(best, time.perf_counter() - t0)
        run = {"seconds": best, "tokens": [h.y_sequence.tolist() for h in hyps]}
        run["decoder"] = _decoder_only(model, paths, bs, prompt, repeats)
        out["runs"][str(bs)] = run
    Path(out_json).write_text(json.dumps(out))


def _decoder_only(model, paths: list[str], bs: int, prompt: list[int], repeats: int) -> dict:
    """Greedy decoding alone, on encoder states computed beforehand (batches in transcribe()'s order)."""
    import torch

    states = []
    with torch.no_grad():
        for start in range(0, len(paths), bs):
            waves = [_load(p) for p in paths[start : start + bs]]
            lens = torch.tensor([len(w) for w in waves])
            batch = torch.zeros(len(waves), int(lens.max()))
            for i, w in enumerate(waves):
                batch[i, : len(w)] = w
            _, enc_len, enc, enc_mask = model.forward(input_signal=batch, input_signal_length=lens)
            states.append((enc, enc_mask, torch.tensor([prompt] * len(waves))))
    best, tokens = float("inf"), 0
    for _ in range(repeats + 1):  # the first round is the warm-up
        t0 = time.perf_counter()
        count = 0
        for enc, enc_mask, prompts in states:
            hyps = model.decoding.decode_predictions_tensor(
                encoder_hidden_states=enc, encoder_input_mask=enc_mask, decoder_input_ids=prompts,
                return_hypotheses=True,
            )  # fmt: skip
            count += sum(len(h.y_sequence) + 1 for h in hyps)  # + 1: the EOS
        elapsed = time.perf_counter() - t0
        model.eval()
        if _ > 0 or repeats == 0:
            best, tokens = min(best, elapsed), count
    return {"seconds": best, "tokens": tokens}


COMMANDS = {"build": build, "reference": reference, "transcribe": transcribe, "bench": bench}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(f"usage: nemo_runner.py {{{','.join(COMMANDS)}}} ARGS...")
    COMMANDS[sys.argv[1]](*sys.argv[2:])
