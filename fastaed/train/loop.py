"""``train(cfg)``: the training loop, explicit from top to bottom (no framework, no callbacks).

Phases: setup (ranks, data, model, optimizer, resume: ``setup.py``) → optimizer steps (:func:`optimizer_step`:
batches → features → forward → loss → backward with OOM split → gradient all-reduce → non-finite guard →
clip → update → log; the pieces shared with the batch-size profile are in ``step.py``), with periodic
evaluation and checkpoints → cleanup (final evaluation and checkpoint, learning curve, summary), both in
``session.py``.

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

import functools
import hashlib
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from fastaed.data.dataset import Batch
from fastaed.sampling import BucketingSampler
from fastaed.train import checkpoint as ckpt
from fastaed.train import distributed as D
from fastaed.train.batches import StreamItem, batch_stream
from fastaed.train.config import TrainConfig
from fastaed.train.faults import (
    FaultInjector,
    NonFiniteGuard,
    accumulate_with_oom_split,
    apply_bad_input_policy,
)
from fastaed.train.metrics import STAT_FIELDS, batch_stats, left_out_line, peak_memory_mb, step_telemetry
from fastaed.train.pretrained import load_pretrained
from fastaed.train.schedule import lr_at
from fastaed.train.session import Session
from fastaed.train.setup import (
    build_model_parts,
    load_data,
    load_distiller,
    open_metrics,
    prepare_run_dir,
    resume_position,
)
from fastaed.train.shards import shard_stream, stream_rejections
from fastaed.train.step import LOSS_PARTS, Precision, piece_forward


def train(cfg: TrainConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """Train as configured; returns the run summary (also written to ``out_dir/summary.json`` by rank 0).

    ``resume`` (None: ``runtime.resume``): ``"auto"`` continues from ``out_dir``'s newest intact checkpoint
    if there is one (an error when every checkpoint there is damaged), ``"none"`` starts fresh (an earlier
    run's records in ``out_dir`` move to ``previous-N/``), a path resumes from that checkpoint.
    """
    t_start = time.perf_counter()
    # ---- setup: ranks, device, precision, data, model, resume ----------------------------------------------
    rt, seed = cfg.runtime, cfg.sampler.seed
    info, device = D.setup(rt.device)
    if rt.threads:
        torch.set_num_threads(rt.threads)
    precision = Precision.resolve(device, rt.dtype)
    if rt.dtype == "bf16" and not precision.bf16:
        D.print0("note: bf16 autocast is used on CUDA only; training in fp32 on CPU")
    out_dir = Path(rt.out_dir)
    checkpoint = prepare_run_dir(cfg, info, rt.resume if resume is None else resume)
    pretrained = load_pretrained(cfg.model)  # fine-tuning: weights, tokenizer and front end come with it
    data = load_data(cfg, info, device, precision, pretrained)
    parts = build_model_parts(cfg, data.tokenizer.vocab_size, device, pretrained)
    parts.distiller = load_distiller(cfg, info, data, device)  # None unless distill.teacher is set
    # Dropout streams differ per rank (as do the utterances each rank gets).
    torch.manual_seed(ckpt.derive_seed(seed, info.rank))
    np.random.seed(ckpt.derive_seed(seed, info.rank, 1) % 2**32)
    guard = NonFiniteGuard(rt.max_nonfinite)
    start = resume_position(checkpoint, info, parts, guard)  # last to touch the RNG
    metrics = open_metrics(cfg, info, out_dir, start)
    run = Session(
        cfg, info, device, precision, out_dir, data, parts, guard, FaultInjector(cfg.debug), metrics,
        pos=start.pos, totals=start.totals, resumed_from=start.checkpoint, t_start=t_start,
        frontend_entry=pretrained.frontend_entry if pretrained else None,
        carried_extra=pretrained.extra if pretrained else None,
    )  # fmt: skip
    pos = run.pos
    n_params = sum(p.numel() for p in parts.params)
    D.print0(
        f"fastaed train: {cfg.model_name} ({n_params / 1e6:.2f}M params), {data.train_items} train "
        f"utts, {device}, {precision.name}, world size {info.world_size}, out_dir {out_dir}"
    )
    if rt.time_budget_s is not None:
        left = max(rt.time_budget_s - pos.elapsed_s, 0.0)
        D.print0(
            f"time budget {rt.time_budget_s / 60:.1f} min of training (runtime.time_budget_s), "
            f"{left / 60:.1f} min left; then a final evaluation and checkpoint"
        )
    # Built before the first step: a run whose data has nothing to train on stops here, naming a line.
    sampler = data.sampler_for(shuffle=not (cfg.sampler.short_first_epoch and pos.epoch == 0))
    sampler.set_epoch(pos.epoch)  # what save() would record if no step ran (already at max_steps)
    # On shards, rejections are counted as the shards are read (the summary has them).
    D.print0(left_out_line(data.train_report.counts, {} if data.shards else sampler.assignment.rejected))

    # ---- loop ----------------------------------------------------------------------------------------------
    pin = device.type == "cuda"
    if data.shards is not None:
        stream = shard_stream(cfg, data.shards, sampler, pos.epoch, start.sampler_state, pin)
    else:
        stream = batch_stream(cfg, data.train_set, data.sampler_for, pos.epoch, start.sampler_state, pin)
    # Under a time budget the bar runs in seconds of the budget, so its ETA is when the run really ends.
    by_time = rt.time_budget_s is not None
    bar = tqdm(
        total=rt.time_budget_s if by_time else cfg.optim.max_steps,
        initial=min(run.elapsed_s(), rt.time_budget_s) if by_time else pos.step,
        unit="s" if by_time else "step", desc="train", dynamic_ncols=True,
        bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} s [{elapsed}<{remaining}{postfix}]" if by_time
        else None,
        disable=not (info.is_main and rt.progress),
    )  # fmt: skip
    recent_losses: deque[float] = deque(maxlen=50)
    last_eval: dict[str, Any] = {}
    last_eval_step, stopped_by = -1, "max_steps"
    last_ckpt = run.checkpoint_path()  # resumed from this very checkpoint: not written again at the end
    resumed_here = start.checkpoint is not None and start.checkpoint.resolve() == last_ckpt.resolve()
    last_ckpt_step = pos.step if resumed_here else -1
    finished = False
    try:
        while pos.step < cfg.optim.max_steps:
            step = optimizer_step(run, stream)
            record, sampler = step.record, step.sampler
            metrics.log(record)
            if record["loss"] is not None:  # None: a skipped (non-finite) step
                recent_losses.append(record["loss"])
            bar.update(min(record["step_time_s"], bar.total - bar.n) if by_time else 1)
            if pos.step % rt.log_every == 0 and recent_losses:
                loss = f"{np.mean(recent_losses):.3f}"
                bar.set_postfix(step=pos.step, loss=loss, lr=f"{record['lr']:.2e}", bs=record["batch_size"])

            # periodic evaluation and checkpoint; a time budget ends the run cleanly
            if rt.eval_every and pos.step % rt.eval_every == 0:
                last_eval, last_eval_step = run.evaluate(), pos.step
            if rt.ckpt_every and pos.step % rt.ckpt_every == 0:
                last_ckpt, last_ckpt_step = run.save(sampler), pos.step
            if step.stop:
                stopped_by = "time_budget"
                D.print0(f"\ntime budget of {rt.time_budget_s:.0f} s reached at step {pos.step}")
                break

        # ---- cleanup: final evaluation and checkpoint, learning curve, summary -----------------------------
        bar.close()
        if last_eval_step != pos.step:
            last_eval = run.evaluate()
        if last_ckpt_step != pos.step:
            last_ckpt = run.save(sampler)
        rejected = stream_rejections(sampler) if data.shards else sampler.assignment.rejected
        summary = run.summary(stopped_by, recent_losses, last_eval, last_ckpt, rejected)
        run.write_summary(summary)
        finished = True
        return summary
    finally:
        stream.close()  # stops this epoch's DataLoader workers
        bar.close()
        metrics.close()
        D.cleanup(finished)


@dataclass
class StepOutcome:
    """What the loop needs from a step besides ``run.pos``."""

    record: dict[str, Any]  # the step's metrics.jsonl record
    sampler: BucketingSampler  # the sampler of the step's last batch (its state goes into a checkpoint)
    stop: bool  # some rank ran past the time budget: the run ends after this step


def optimizer_step(run: Session, stream: Iterator[StreamItem]) -> StepOutcome:
    """One optimizer step: its batches, statistics, forward + backward with OOM split, agreement over ranks,
    clip and update. Advances ``run.pos`` and ``run.totals``."""
    cfg, info, device, parts, pos, injector = run.cfg, run.info, run.device, run.parts, run.pos, run.injector
    t0 = time.perf_counter()
    # 1. this step's batches (several with gradient accumulation); bad input per the policy
    micro: list[Batch] = []
    buckets, index_hash, skipped = [], hashlib.sha1(), Counter()
    for _ in range(cfg.optim.accumulation):
        item = next(stream)
        pos.epoch, pos.batches_in_epoch, sampler = item.epoch, item.k + 1, item.sampler
        apply_bad_input_policy(cfg.data.on_bad_input, item.error)
        skipped.update(item.batch.bad_input.counts)
        buckets.append(item.bucket)
        index_hash.update(np.asarray(item.batch.indices, dtype=np.int64).tobytes())
        if len(item.batch):  # empty when every utterance of it was skipped as bad input
            micro.append(item.batch)
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
        ckpt.derive_seed(cfg.sampler.seed, pos.step, info.rank)
    )
    augment = cfg.specaugment.enabled and pos.step >= cfg.specaugment.start_step
    ctc_weight = parts.model.config.ctc_weight
    forward = functools.partial(
        piece_forward, model=parts.model, frontend=parts.frontend, specaug=parts.specaug if augment else None,
        generator=generator, norm=norm, loss_cfg=cfg.loss, ctc_weight=ctc_weight, injector=injector,
        step=pos.step + 1, autocast=run.precision.autocast, distiller=parts.distiller,
    )  # fmt: skip
    pieces = [b.to(device, non_blocking=True) for b in micro]
    # Encoder frozen (fine-tuning's first steps): no gradient reaches it, so backward stops at its output
    # and AdamW leaves its weights and moments alone (parameters without a gradient are skipped, on every
    # rank: see D.all_reduce_gradients_); its batch norms use and keep their running statistics.
    frozen = pos.step < cfg.optim.freeze_encoder_steps
    parts.model.encoder.requires_grad_(not frozen)
    for module in parts.model.encoder.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.train(not frozen)
    zero_grad = functools.partial(parts.optimizer.zero_grad, set_to_none=True)
    kept, splits = accumulate_with_oom_split(pieces, forward, zero_grad=zero_grad, backward=injector.backward)
    none_kept = torch.zeros(len(LOSS_PARTS), dtype=torch.float64)
    loss_parts = torch.stack(kept).sum(0).double().cpu() if kept else none_kept

    # 4. ranks agree on the loss, on skipping and on stopping; then sum gradients, clip, update
    # The budget covers the whole run: a resumed run gets what the killed one had left.
    over_budget = cfg.runtime.time_budget_s is not None and run.elapsed_s() > cfg.runtime.time_budget_s
    nonfinite = not bool(torch.isfinite(loss_parts).all())
    status = torch.cat([loss_parts, torch.tensor([nonfinite, over_budget, splits], dtype=torch.float64)])
    ce, ctc_part, kl, state, n_nonfinite, n_stop, n_splits = D.all_reduce_sum_(status).tolist()
    loss_value = ce if ctc_weight is None else (1 - ctc_weight) * ce + ctc_weight * ctc_part
    distill = parts.distiller.weights if parts.distiller is not None else None
    if distill is not None:  # the objective the step minimised
        loss_value = distill.ce * loss_value + distill.kl * kl + distill.state * state
    grad_norm = float("nan")
    if n_nonfinite == 0:
        D.all_reduce_gradients_(parts.params)
        clip = cfg.optim.grad_clip if cfg.optim.grad_clip is not None else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(parts.params, clip))
    finite = bool(np.isfinite(grad_norm))  # NaN when the loss was not finite on some rank
    lr = lr_at(pos.step, cfg.optim)
    if run.guard.check(finite, pos.step + 1, f"loss {loss_value:.4g}, grad norm {grad_norm:.4g}"):
        for group in parts.optimizer.param_groups:
            group["lr"] = lr
        parts.optimizer.step()
    parts.optimizer.zero_grad(set_to_none=True)
    pos.step += 1
    if cfg.debug.sleep_per_step_s:
        time.sleep(cfg.debug.sleep_per_step_s)

    # 5. telemetry: global numbers (every rank contributed to ``totals``)
    step_time = time.perf_counter() - t0
    run.totals.add_step(totals, skipped, step_time, int(n_splits))
    record = {
        "type": "train", "step": pos.step, "epoch": pos.epoch, "batch_in_epoch": pos.batches_in_epoch,
        "bucket": buckets[0], "batch_sha1": index_hash.hexdigest(), "skipped_step": not finite,
        "local_batch_size": sum(len(b) for b in micro),
        "loss": loss_value if finite else None, "ce_loss": ce if finite else None,
        "ctc_loss": ctc_part if finite and ctc_weight is not None else None,
        **({"kl_loss": kl, "state_loss": state} if distill is not None and finite else {}),
        "lr": lr, "grad_norm": grad_norm, "specaugment": augment, "encoder_frozen": frozen,
        "oom_splits": int(n_splits),
        **step_telemetry(totals, step_time), "data_time_s": t_data,
        "peak_mem_mb": peak_memory_mb(device),
    }  # fmt: skip
    return StepOutcome(record, sampler, n_stop > 0)
