"""``train(cfg)``: the training loop, explicit from top to bottom (no framework, no callbacks).

Phases: setup (ranks, data, model, optimizer, resume) → optimizer steps (batches → features → forward → loss
→ backward with OOM split → gradient all-reduce → non-finite guard → clip → update → log), with periodic
evaluation and checkpoints → cleanup (final evaluation and checkpoint, learning curve, summary).

Determinism, which makes a resumed run repeat the uninterrupted one (same batches; on CPU the same losses):

- batches: the sampler's order is a function of (seed, epoch, world size); a checkpoint stores the number of
  batches *trained* in the epoch, not the sampler's own count, which runs ahead by the DataLoader's prefetch;
- DataLoader workers only read audio (deterministic) and draw their base seed from a private generator, so
  creating a loader mid-epoch does not consume the global torch RNG;
- dither and SpecAugment run in the main process from a generator seeded by hash(seed, step, rank);
- dropout draws from the global torch RNG, whose state (per rank) is in every checkpoint; evaluation runs
  under ``fork_rng`` so it cannot shift that stream;
- the learning rate is a pure function of the step.

Loss normalisation: every piece of a step (micro-batches of gradient accumulation, halves from an OOM split,
other ranks' batches) sums its per-token losses and divides by the token count of the *whole* step over all
ranks, so the summed gradients are exactly the global per-token gradient (see ``faults.py``,
``distributed.py``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastaed.data.dataset import AEDDataset, Batch
from fastaed.data.features import FeatureConfig, LogMelFeatures, SpecAugment, SpecAugmentConfig
from fastaed.data.index import build_index
from fastaed.data.manifest import ManifestSpec
from fastaed.data.tokenizer import Tokenizer
from fastaed.model import EncoderDecoderModel, build_model, cross_entropy_loss, ctc_loss
from fastaed.sampling import BucketingSampler
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.batches import batch_stream, make_sampler_factory
from fastaed.train.config import LossConfig, TrainConfig
from fastaed.train.evaluate import evaluate
from fastaed.train.faults import (
    FaultInjector,
    NonFiniteGuard,
    accumulate_with_oom_split,
    apply_bad_input_policy,
)
from fastaed.train.metrics import (
    CURVE_FILE,
    METRICS_FILE,
    STAT_FIELDS,
    MetricsWriter,
    RunTotals,
    batch_stats,
    peak_memory_mb,
    plot_learning_curve,
    step_telemetry,
    summary_table,
)
from fastaed.train.schedule import lr_at

SUMMARY_FILE = "summary.json"
SUMMARY_TEXT_FILE = "summary.txt"


@dataclass
class Position:
    """Where the run is; goes into every checkpoint with the run totals."""

    step: int = 0  # optimizer steps done
    epoch: int = 0  # epoch of the last trained batch
    batches_in_epoch: int = 0  # batches of that epoch trained: what the sampler resumes from
    elapsed_s: float = 0.0  # run wall time up to the checkpoint this process resumed from (0 if fresh)


# ---- the step's pieces ------------------------------------------------------------------------------------


def compute_loss(
    model: EncoderDecoderModel,
    piece: Batch,
    norm: torch.Tensor,
    loss_cfg: LossConfig,
    ctc_weight: float | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss to differentiate, detached (ce, ctc) parts); norm: (2,) the step's CE and CTC token counts."""
    with_ctc = ctc_weight is not None
    out = model(piece.feats, piece.feat_lens, piece.dec_inputs, piece.dec_lens, return_ctc=with_ctc)
    ce_sum, _ = cross_entropy_loss(
        out.logits if with_ctc else out,
        piece.dec_targets,
        target_lens=piece.dec_lens,
        prompt_lens=piece.prompt_lens if loss_cfg.mask_prompt else None,
        label_smoothing=loss_cfg.label_smoothing,
        reduction="sum",
    )
    ce = ce_sum / norm[0]
    if not with_ctc:
        return ce, torch.stack([ce.detach(), torch.zeros_like(ce)])
    lens = piece.token_lens - piece.prompt_lens - 1  # (B,) transcript tokens: no prompt, no EOS
    pos = piece.prompt_lens[:, None] + torch.arange(int(lens.max()), device=lens.device)[None, :]
    targets = piece.tokens.gather(1, pos.clamp(max=piece.tokens.shape[1] - 1))  # (B, S)
    ctc_sum, _ = ctc_loss(out.ctc_log_probs, out.enc_lens, targets, lens, reduction="sum")
    ctc = ctc_sum / norm[1]
    return (1 - ctc_weight) * ce + ctc_weight * ctc, torch.stack([ce.detach(), ctc.detach()])


def piece_forward(
    piece: Batch,
    *,
    model: EncoderDecoderModel,
    frontend: LogMelFeatures,
    specaug: SpecAugment | None,
    generator: torch.Generator,
    norm: torch.Tensor,
    loss_cfg: LossConfig,
    ctc_weight: float | None,
    injector: FaultInjector,
    step: int,
    autocast: Callable[[], AbstractContextManager[Any]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """What ``accumulate_with_oom_split`` runs for every piece: features (once per piece; the halves of a
    split inherit their rows), then model and loss. Dither and SpecAugment draw from ``generator``."""
    injector.before_forward(piece)
    if piece.feats is None:
        with torch.no_grad():
            feats, feat_lens = frontend(piece.audio, piece.audio_lens, generator=generator)
            if specaug is not None:
                feats = specaug(feats, feat_lens, generator=generator)
        piece.feats, piece.feat_lens = feats, feat_lens
    with autocast():
        loss, parts = compute_loss(model, piece, norm, loss_cfg, ctc_weight)
    return injector.poison(loss, step), parts


# ---- the loop ----------------------------------------------------------------------------------------------


def train(cfg: TrainConfig, resume: str | Path | None = "auto") -> dict[str, Any]:
    """Train as configured; returns the run summary (also written to ``out_dir/summary.json`` by rank 0).

    ``resume``: ``"auto"`` continues from ``out_dir``'s latest checkpoint if there is one, ``"none"`` starts
    fresh, a path resumes from that checkpoint.
    """
    t_start = time.perf_counter()
    # ---- setup: ranks, device, precision -------------------------------------------------------------------
    rt, seed, policy = cfg.runtime, cfg.sampler.seed, cfg.data.on_bad_input
    info, device = D.setup(rt.device)
    if rt.threads:
        torch.set_num_threads(rt.threads)
    use_bf16 = device.type == "cuda" and rt.dtype in ("auto", "bf16")
    if rt.dtype == "bf16" and not use_bf16:
        D.print0("note: bf16 autocast is used on CUDA only; training in fp32 on CPU")

    def autocast() -> AbstractContextManager[Any]:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    out_dir = Path(rt.out_dir)
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.to_yaml(out_dir / "config.yaml")

    # ---- setup: data (workers always skip-and-report; the main process applies the policy) -----------------
    tokenizer = Tokenizer.load(cfg.data.tokenizer)
    with D.rank0_first():  # rank 0 builds the index cache, the other ranks then read it
        specs = [ManifestSpec.parse(m) for m in cfg.data.train_manifests]
        train_index = build_index(specs, tokenizer, on_bad_input=policy)
        dev_index = (
            build_index([cfg.data.dev_manifest], tokenizer, on_bad_input=policy)
            if cfg.data.dev_manifest
            else None
        )
    train_set = AEDDataset(train_index, tokenizer, on_bad_input="skip")
    dev_set = AEDDataset(dev_index, tokenizer, on_bad_input="skip") if dev_index is not None else None
    identity = None
    if cfg.sampler.profile:  # checked against the profile: it must have been made for this very run
        from fastaed.train.profile.profile import ProfileIdentity

        model_cfg, dtype = cfg.model.model_config(tokenizer.vocab_size), "bf16" if use_bf16 else "fp32"
        identity = ProfileIdentity.for_run(model_cfg, device, dtype, tokenizer.identity)
    sampler_for = make_sampler_factory(cfg, train_index, info, identity)

    # ---- setup: model, front end, optimizer ----------------------------------------------------------------
    torch.manual_seed(seed)  # the same initial weights on every rank (and broadcast from rank 0 to be sure)
    model = D.broadcast_model_(build_model(cfg.model.model_config(tokenizer.vocab_size)).to(device))
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]  # matrices; biases and norm scales are not decayed
    rest = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.optim.weight_decay},
        {"params": rest, "weight_decay": 0.0},
    ]
    fused = True if device.type == "cuda" else None
    optimizer = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, fused=fused)
    frontend = LogMelFeatures(FeatureConfig(dither=cfg.features.dither)).to(device)
    sa = cfg.specaugment
    specaug = SpecAugment(SpecAugmentConfig(sa.freq_masks, sa.freq_width, sa.time_masks, sa.time_width))
    ctc_weight = model.config.ctc_weight
    injector, guard = FaultInjector(cfg.debug), NonFiniteGuard(rt.max_nonfinite)
    pos, run = Position(), RunTotals()
    # Dropout streams differ per rank (as do the utterances each rank gets).
    torch.manual_seed(ckpt.derive_seed(seed, info.rank))
    np.random.seed(ckpt.derive_seed(seed, info.rank, 1) % 2**32)

    # ---- setup: resume -------------------------------------------------------------------------------------
    resumed_from = ckpt.resolve_resume(resume, out_dir)
    sampler_state = None
    if resumed_from is not None:
        state = ckpt.load_trainer_state(resumed_from)
        if len(state["rng"]) != info.world_size:
            raise ValueError(f"{resumed_from} was written by {len(state['rng'])} ranks; resume with as many")
        ckpt.load_weights_(model, resumed_from)
        optimizer.load_state_dict(state["optimizer"])
        pos, run = Position(**state["position"]), RunTotals(**state["totals"])
        guard.load_state_dict(state["guard"])
        sampler_state = state["sampler"]
        ckpt.restore_rng_state(state["rng"][info.rank])  # last: nothing may draw from the RNG after this
        D.print0(f"resumed from {resumed_from} at step {pos.step} (epoch {pos.epoch})")
    rank_file = METRICS_FILE if info.is_main else f"metrics.rank{info.rank}.jsonl"
    metrics = MetricsWriter(
        out_dir,
        enabled=info.is_main or cfg.debug.log_all_ranks,
        tensorboard=rt.tensorboard and info.is_main,
        name=rank_file,
    )
    metrics.truncate_after(pos.step)
    metrics.log({"type": "event", "event": "resume" if resumed_from else "start", "step": pos.step})
    n_params = sum(p.numel() for p in params)
    D.print0(
        f"fastaed train: {cfg.model.preset} ({n_params / 1e6:.2f}M params), {len(train_index)} train utts, "
        f"{device}, {'bf16' if use_bf16 else 'fp32'}, world size {info.world_size}, out_dir {out_dir}"
    )
    if rt.time_budget_s is not None:
        left = max(rt.time_budget_s - pos.elapsed_s, 0.0)
        D.print0(
            f"time budget {rt.time_budget_s / 60:.1f} min of training (runtime.time_budget_s), "
            f"{left / 60:.1f} min left; then a final evaluation and checkpoint"
        )

    def run_eval() -> dict[str, Any]:
        result: dict[str, Any] = {}
        if dev_set is not None and info.is_main:
            t0 = time.perf_counter()
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                result = evaluate(
                    model, frontend, dev_set, tokenizer, device=device, autocast=autocast, loss_cfg=cfg.loss,
                    on_bad_input=policy, max_wer_utts=rt.eval_max_utts, batch_duration=rt.eval_batch_duration,
                    num_workers=rt.num_workers,
                )  # fmt: skip
            result["eval_time_s"] = time.perf_counter() - t0
            metrics.log({"type": "eval", "step": pos.step, **result})
            wer = (
                f", WER {result['wer']:.3f}, CER {result['cer']:.3f}" if result.get("wer") is not None else ""
            )
            D.print0(f"\nstep {pos.step}: dev loss {result['dev_loss']:.4f}{wer}")
        D.barrier()
        return result

    def save(sampler: BucketingSampler) -> Path:
        rng_states = D.all_gather_objects(ckpt.capture_rng_state())
        if info.is_main:
            run_elapsed = pos.elapsed_s + time.perf_counter() - t_start
            state = {
                "optimizer": optimizer.state_dict(),
                "position": {**dataclasses.asdict(pos), "elapsed_s": run_elapsed},
                "totals": dataclasses.asdict(run),
                "guard": guard.state_dict(),
                "sampler": sampler.state_dict(steps_done=pos.batches_in_epoch),  # trained, not prefetched
                "rng": rng_states,
            }
            extra = {"epoch": pos.epoch, "train_config": cfg.to_dict()}
            ckpt.save_checkpoint(
                out_dir, pos.step, model, state, tokenizer_identity=tokenizer.identity,
                keep=rt.keep_checkpoints, extra=extra, tokenizer=tokenizer,
            )  # fmt: skip
        D.barrier()  # no rank runs ahead (or exits) before the checkpoint is complete
        return out_dir / f"{ckpt.PREFIX}{pos.step}"

    # ---- loop ----------------------------------------------------------------------------------------------
    model.train()
    frontend.train()
    specaug.train()
    stream = batch_stream(cfg, train_set, sampler_for, pos.epoch, sampler_state, device.type == "cuda")
    # Under a time budget the bar runs in seconds of the budget, so its ETA is when the run really ends.
    by_time = rt.time_budget_s is not None
    bar = tqdm(
        total=rt.time_budget_s if by_time else cfg.optim.max_steps,
        initial=min(pos.elapsed_s + time.perf_counter() - t_start, rt.time_budget_s) if by_time else pos.step,
        unit="s" if by_time else "step", desc="train", dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]" if by_time
        else None,
        disable=not (info.is_main and rt.progress),
    )  # fmt: skip
    recent_losses: deque[float] = deque(maxlen=50)
    last_eval: dict[str, Any] = {}
    last_eval_step, stopped_by = -1, "max_steps"
    last_ckpt = out_dir / f"{ckpt.PREFIX}{pos.step}"  # the same path on every rank (rank 0 writes it)
    last_ckpt_step = (
        pos.step if resumed_from is not None and resumed_from.resolve() == last_ckpt.resolve() else -1
    )
    sampler = sampler_for(shuffle=not (cfg.sampler.short_first_epoch and pos.epoch == 0))
    sampler.set_epoch(pos.epoch)  # what save() would record if no step ran (already at max_steps)
    try:
        while pos.step < cfg.optim.max_steps:
            t0 = time.perf_counter()
            # 1. this step's batches (several with gradient accumulation); bad input per the policy
            micro: list[Batch] = []
            buckets, index_hash, skipped = [], hashlib.sha1(), Counter()
            for _ in range(cfg.optim.accumulation):
                pos.epoch, k, bucket, sampler, batch, error = next(stream)
                pos.batches_in_epoch = k + 1
                apply_bad_input_policy(policy, error)
                skipped.update(batch.bad_input.counts)
                buckets.append(bucket)
                index_hash.update(np.asarray(batch.indices, dtype=np.int64).tobytes())
                if len(batch):  # empty when every utterance of it was skipped as bad input
                    micro.append(batch)
            t_data = time.perf_counter() - t0

            # 2. the step's statistics over all ranks, on the host before the batches move to the device;
            #    its CE and CTC token counts normalise every piece's loss
            zero = torch.zeros(len(STAT_FIELDS), dtype=torch.float64)
            local = sum((batch_stats(b, cfg.loss.mask_prompt) for b in micro), zero)
            local[-1] = sum(skipped.values())
            totals = D.all_reduce_sum_(local)
            if totals[-1] > 0 and info.enabled:  # rare: some rank skipped bad audio; count reasons globally
                skipped = sum(D.all_gather_objects(skipped), Counter())
            norm = totals[:2].clamp(min=1).to(device=device, dtype=torch.float32)

            # 3. forward + backward over every piece, splitting pieces that run out of memory
            generator = torch.Generator(device=device).manual_seed(
                ckpt.derive_seed(seed, pos.step, info.rank)
            )
            augment = sa.enabled and pos.step >= sa.start_step
            forward = functools.partial(
                piece_forward, model=model, frontend=frontend, specaug=specaug if augment else None,
                generator=generator, norm=norm, loss_cfg=cfg.loss, ctc_weight=ctc_weight, injector=injector,
                step=pos.step + 1, autocast=autocast,
            )  # fmt: skip
            pieces = [b.to(device, non_blocking=True) for b in micro]
            zero_grad = functools.partial(optimizer.zero_grad, set_to_none=True)
            kept, splits = accumulate_with_oom_split(
                pieces, forward, zero_grad=zero_grad, backward=injector.backward
            )
            parts = torch.stack(kept).sum(0).double().cpu() if kept else torch.zeros(2, dtype=torch.float64)

            # 4. ranks agree on the loss, on skipping and on stopping; then sum gradients, clip, update
            # The budget covers the whole run: a resumed run gets what the killed one had left.
            elapsed = pos.elapsed_s + time.perf_counter() - t_start
            over_budget = rt.time_budget_s is not None and elapsed > rt.time_budget_s
            nonfinite = not bool(torch.isfinite(parts).all())
            status = torch.cat([parts, torch.tensor([nonfinite, over_budget, splits], dtype=torch.float64)])
            ce, ctc_part, n_nonfinite, n_stop, n_splits = D.all_reduce_sum_(status).tolist()
            loss_value = ce if ctc_weight is None else (1 - ctc_weight) * ce + ctc_weight * ctc_part
            grad_norm = float("nan")
            if n_nonfinite == 0:
                D.all_reduce_gradients_(params)
                clip = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else float("inf")
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params, clip))
            finite = bool(np.isfinite(grad_norm))  # NaN when the loss was not finite on some rank
            lr = lr_at(pos.step, cfg.optim)
            if guard.check(finite, pos.step + 1, f"loss {loss_value:.4g}, grad norm {grad_norm:.4g}"):
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            pos.step += 1
            if cfg.debug.sleep_per_step_s:
                time.sleep(cfg.debug.sleep_per_step_s)

            # 5. telemetry: global numbers (every rank contributed to ``totals``)
            step_time = time.perf_counter() - t0
            run.add_step(totals, skipped, step_time, int(n_splits))
            if finite:
                recent_losses.append(loss_value)
            record = {
                "type": "train", "step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batches_in_epoch,
                "bucket": buckets[0], "batch_sha1": index_hash.hexdigest(), "skipped_step": not finite,
                "local_batch_size": sum(len(b) for b in micro),
                "loss": loss_value if finite else None, "ce_loss": ce if finite else None,
                "ctc_loss": ctc_part if finite and ctc_weight is not None else None,
                "lr": lr, "grad_norm": grad_norm, "specaugment": augment, "oom_splits": int(n_splits),
                **step_telemetry(totals, step_time), "data_time_s": t_data,
                "peak_mem_mb": peak_memory_mb(device),
            }  # fmt: skip
            metrics.log(record)
            bar.update(min(step_time, bar.total - bar.n) if by_time else 1)
            if pos.step % rt.log_every == 0 and recent_losses:
                loss = f"{np.mean(recent_losses):.3f}"
                bar.set_postfix(step=pos.step, loss=loss, lr=f"{lr:.2e}", bs=record["batch_size"])

            # 6. periodic evaluation and checkpoint; a time budget ends the run cleanly
            if rt.eval_every and pos.step % rt.eval_every == 0:
                last_eval, last_eval_step = run_eval(), pos.step
            if rt.ckpt_every and pos.step % rt.ckpt_every == 0:
                last_ckpt, last_ckpt_step = save(sampler), pos.step
            if n_stop > 0:
                stopped_by = "time_budget"
                D.print0(f"\ntime budget of {rt.time_budget_s:.0f} s reached at step {pos.step}")
                break

        # ---- cleanup: final evaluation and checkpoint, learning curve, summary -----------------------------
        bar.close()
        if last_eval_step != pos.step:
            last_eval = run_eval()
        if last_ckpt_step != pos.step:
            last_ckpt = save(sampler)
        summary = {
            "steps": pos.step, "epoch": pos.epoch, "stopped_by": stopped_by,
            "wall_time_s": pos.elapsed_s + time.perf_counter() - t_start,
            "final_train_loss": float(np.mean(recent_losses)) if recent_losses else None,
            **{k: last_eval.get(k) for k in ("dev_loss", "wer", "cer", "wer_utts", "examples")},
            **run.summary(batches_per_step=cfg.optim.accumulation * info.world_size),
            "nonfinite_skipped": guard.skipped,
            "bad_input": {
                "train_index": train_index.report.to_dict(),
                "dev_index": dev_index.report.to_dict() if dev_index is not None else None,
                "audio_skipped": sum(run.bad_input.values()), "audio_by_reason": dict(run.bad_input),
            },
            "checkpoint": str(last_ckpt),
            "resumed_from": str(resumed_from) if resumed_from else None,
            "model": cfg.model.preset, "params": n_params, "device": str(device),
            "dtype": "bf16" if use_bf16 else "fp32", "world_size": info.world_size,
            "peak_mem_mb": peak_memory_mb(device), "out_dir": str(out_dir),
        }  # fmt: skip
        if info.is_main:
            (out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
            metrics.close()
            plot_learning_curve(
                out_dir / METRICS_FILE, out_dir / CURVE_FILE, title=f"{cfg.model.preset}: {out_dir}"
            )
            table = summary_table(summary)
            (out_dir / SUMMARY_TEXT_FILE).write_text(table + "\n")
            D.print0(table)
        return summary
    finally:
        stream.close()  # stops this epoch's DataLoader workers
        bar.close()
        metrics.close()
        D.cleanup()
