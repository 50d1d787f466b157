"""The training loop: micro-batches, gradient accumulation, clipping, AdamW step, validation, checkpoints.

One `Trainer` per process. Everything it needs is resolved up front (`TrainConfig` -> `TrainPlan`), then
`fit()` runs optimizer steps until the token budget (or `max_steps`) is reached. Parallelism, activation
checkpointing and compile are applied from outside the model (`parallel.py`); the model is unchanged.

Determinism: the model init is seeded (same on every rank), each batch is a pure function of
(seed, step, rank) through the loader, and a checkpoint holds the optimizer, loader position and RNG —
so on CPU a resumed run reproduces the uninterrupted loss curve exactly.
"""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
import sys
from pathlib import Path

import torch

from sambay.config import ModelConfig, tiny
from sambay.data.dataset import manifest_tokenizer
from sambay.interop.errors import CheckpointError
from sambay.model import CausalLM
from sambay.train import checkpoint as ckpt
from sambay.train import distributed as D
from sambay.train.config import TrainConfig, TrainConfigError, TrainPlan, resolve
from sambay.train.data import SYNTHETIC, build_loaders, parse_source
from sambay.train.metrics import MetricsLogger, Throughput, flops_per_token, known_peak_flops, truncate_metrics
from sambay.train.optim import LRSchedule, build_optimizer, clip_gradients
from sambay.train.parallel import parallelize


def data_tokenizer(cfg: TrainConfig) -> dict | None:
    """The tokenizer entry of the training data's manifest (None for synthetic data or bare shards)."""
    return None if cfg.data == SYNTHETIC else manifest_tokenizer(parse_source(cfg.data))


def build_model_config(cfg: TrainConfig) -> ModelConfig:
    overrides = dict(cfg.model_overrides)
    if cfg.parametrization is not None:
        overrides["parametrization"] = cfg.parametrization
    if cfg.tiny:
        tokenizer = data_tokenizer(cfg)
        if tokenizer is not None and "vocab_size" not in overrides:  # a toy model sized to the data's vocabulary
            overrides["vocab_size"] = int(tokenizer["vocab_size"])
        return tiny(cfg.preset, depth=cfg.depth, **overrides)
    return ModelConfig.from_preset(cfg.preset, depth=cfg.depth, **overrides)


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class Trainer:
    def __init__(self, cfg: TrainConfig, dist: D.DistInfo | None = None):
        self.cfg = cfg
        self.dist = dist or D.init_distributed(cfg.device)
        dev = self.dist.device
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        if cfg.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True)
        dtype = cfg.dtype or ("bf16" if dev.type == "cuda" else "fp32")
        if dtype not in ("fp32", "bf16"):
            raise TrainConfigError(f"--dtype must be fp32 or bf16 (got {dtype!r})")
        parallel = cfg.parallel if cfg.parallel != "auto" else ("ddp" if self.dist.distributed else "none")
        if parallel != "none" and not self.dist.distributed:
            parallel = "none"  # one process: DDP/FSDP would be no-ops (same maths)
        if parallel == "none" and self.dist.distributed:
            raise TrainConfigError("--parallel none with several processes would train unsynchronised "
                                   "replicas; use ddp or fsdp")
        self.model_config = build_model_config(cfg)
        torch.manual_seed(cfg.seed)  # identical init on every rank (ArchScale seeds 3407)
        with torch.device(dev):
            model = CausalLM(self.model_config)
        n_nonemb = model.num_parameters(exclude_embeddings=True)
        self.plan: TrainPlan = resolve(cfg, self.model_config, n_nonemb, self.dist.world_size, parallel, dtype)
        model.train()
        self.par = parallelize(model, parallel, device=dev, activation_checkpointing=cfg.activation_checkpointing,
                               compile=cfg.compile)
        self.model = self.par.module
        self.optimizer = build_optimizer(self.model, self.plan.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2),
                                         cfg.eps, dev)
        self.schedule = LRSchedule(self.plan.total_steps, self.plan.warmup_steps, cfg.schedule,
                                   cfg.wsd_decay_fraction)
        self.loader, self.val_sets = build_loaders(cfg, self.model_config, self.plan.seq_len,
                                                   self.plan.micro_batch, self.dist.rank, self.dist.world_size)
        self.autocast = torch.autocast(dev.type, dtype=torch.bfloat16, enabled=dtype == "bf16")
        # checkpoints carry the data's tokenizer and EOS id, so they load and generate with nothing else
        tokenizer = data_tokenizer(cfg)
        file = None if tokenizer is None else Path(str(tokenizer.get("file", "")))
        self.tokenizer_file = file if file is not None and file.is_file() else None
        if self.model_config.eos_token_id is None and getattr(self.loader, "eos_id", None) is not None:
            self.model_config.eos_token_id = self.loader.eos_id
        self.run_dir = Path(cfg.run_dir)
        self.step = 0  # optimizer steps completed
        self.tokens = 0
        self.history: list[dict] = []  # per-step train records (kept for tests and the final summary)
        self._claim_run_dir()
        self._resume()
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            _write_json_atomic(self.run_dir / "config.json", {
                "arch": self.model_config.arch, "depth": self.model_config.n_layer,
                "train": cfg.to_dict(), "plan": self.plan.to_dict(), "model": self.model_config.to_dict()})
        self.flops_per_token = flops_per_token(self.model_config, self.plan.seq_len, n_nonemb)
        peak = cfg.peak_flops or known_peak_flops(dev, dtype)
        self.throughput = Throughput(self.flops_per_token, peak, self.dist.world_size)
        D.barrier()

    # ------------------------------------------------------------------ resume
    def _claim_run_dir(self) -> None:
        """A run directory that holds another run is never written over silently: --resume continues it,
        --overwrite deletes that run's checkpoints, metrics and config first, anything else is an error."""
        run_dir, cfg = self.run_dir, self.cfg
        if run_dir.exists() and not run_dir.is_dir():
            raise TrainConfigError(f"--run-dir {run_dir} is a file, not a directory")
        held = [name for name in ("config.json", "metrics.jsonl", "checkpoints") if (run_dir / name).exists()]
        D.barrier()  # every rank looks before rank 0 writes this run's config.json
        if not held or cfg.resume is not None:
            return
        if not cfg.overwrite:
            raise TrainConfigError(f"--run-dir {run_dir} already holds a run ({', '.join(held)}): pass --resume auto "
                                   "to continue it, --overwrite to delete it and start over, or another --run-dir")
        if self.dist.is_main:
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            for name in ("config.json", "metrics.jsonl"):
                (run_dir / name).unlink(missing_ok=True)
            print(f"--overwrite: deleted the previous run in {run_dir}")
        D.barrier()

    def _resume(self) -> None:
        cfg = self.cfg
        if cfg.resume is None:
            return
        if cfg.resume == "auto":  # newest first, falling back past checkpoints that cannot be read
            candidates = [p for _, p in reversed(ckpt.list_checkpoints(cfg.run_dir))]
            if not candidates:  # no checkpoint yet: a fresh start, without the killed attempt's metric lines
                if self.dist.is_main:
                    truncate_metrics(self.run_dir, 0)
                return
        else:
            candidates = [Path(cfg.resume)]
            if not (candidates[0] / ckpt.TRAIN_STATE).is_file():
                raise TrainConfigError(f"--resume {candidates[0]}: not a training checkpoint (no {ckpt.TRAIN_STATE})")
        for path in candidates:
            try:
                state = ckpt.load_checkpoint(path, self.model, self.optimizer, rank=self.dist.rank)
                break
            except ckpt.CheckpointMismatchError as e:
                raise TrainConfigError(f"--resume: {e}; resume with the same model settings, or use another "
                                       "--run-dir") from None
            except (ckpt.CheckpointReadError, CheckpointError) as e:
                if cfg.resume != "auto":
                    raise TrainConfigError(f"--resume {path}: {e}") from None
                if self.dist.is_main:
                    print(f"warning: skipping checkpoint {path}: {e}", file=sys.stderr)
        else:
            raise TrainConfigError(f"--resume auto: none of the {len(candidates)} checkpoint(s) in "
                                   f"{ckpt.checkpoint_root(cfg.run_dir)} can be read (see the warnings above)")
        saved = state.get("plan", {})
        for key in ("batch_tokens", "seq_len", "total_steps"):
            if saved.get(key) != getattr(self.plan, key) and self.dist.is_main:
                print(f"warning: resuming with {key}={getattr(self.plan, key)} (checkpoint: {saved.get(key)}); "
                      "the loss curve will differ from an uninterrupted run")
        self.loader.load_state_dict(state["loader"])
        self.step, self.tokens = int(state["step"]), int(state["tokens"])
        if self.dist.is_main:
            truncate_metrics(self.run_dir, self.step)
            print(f"resumed from {path} at step {self.step} ({self.tokens:,} tokens)")

    # ------------------------------------------------------------------ one step
    def _forward_loss(self, batch) -> torch.Tensor:
        dev = self.dist.device
        x, y = batch[0].to(dev, non_blocking=True), batch[1].to(dev, non_blocking=True)
        docs = batch[2].to(dev, non_blocking=True) if len(batch) > 2 else None
        with self.autocast:
            # chunked fused linear + fp32 cross-entropy: the (B, T, V) logits are never materialised
            return self.par.wrapped(x, targets=y, document_ids=docs, return_logits=False).loss

    def train_step(self) -> dict:
        """One optimizer step over `grad_accum` micro-batches. Returns the step's record (floats; waits for
        the device to finish the step)."""
        return materialize(self.launch_step())

    def launch_step(self) -> dict:
        """Queue one optimizer step without waiting for the device: the record's loss and gradient norms
        are 0-dim device tensors until `materialize`d. `fit` reads each record one step late, so the host
        is already queueing the next step while the device runs this one."""
        plan = self.plan
        factor = self.schedule.apply(self.optimizer, plan.lr, self.step)
        loss_sum = torch.zeros((), device=self.dist.device)
        for i in range(plan.grad_accum):
            batch = next(self.loader)
            last = i == plan.grad_accum - 1
            with self.par.no_sync(last):
                loss = self._forward_loss(batch)
                (loss / plan.grad_accum).backward()  # mean over the global batch after the all-reduce
            loss_sum += loss.detach().float()
        total_norm, norms = clip_gradients(self.optimizer, self.cfg.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.tokens += plan.batch_tokens
        self.throughput.add(plan.batch_tokens)
        loss = D.all_reduce_mean(loss_sum / plan.grad_accum)
        record = {"step": self.step, "tokens": self.tokens, "loss": loss.detach(), "lr_factor": factor,
                  "grad_norm": total_norm.detach()}
        for g in self.optimizer.param_groups:
            record[f"lr_{g['name']}"] = g["lr"]
        for name, n in norms.items():
            record[f"grad_norm_{name}"] = n.detach()
        return record

    # ------------------------------------------------------------------ validation
    @torch.no_grad()
    def evaluate(self) -> dict:
        """Mean validation loss per held-out set ("val_loss" at 1x, "val_loss_2x" at 2x the length)."""
        out = {}
        for key, batches in self.val_sets.items():
            total = torch.zeros((), device=self.dist.device)
            n = 0
            for batch in batches:
                total += self._forward_loss(batch).float()
                n += 1
            if n:
                out[key] = D.all_reduce_mean(total / n).item()
        return out

    def save(self) -> Path | None:
        extra = {"tokens": self.tokens, "loader": self.loader.state_dict(), "plan": self.plan.to_dict(),
                 "train_config": self.cfg.to_dict()}
        return ckpt.save_checkpoint(self.run_dir, self.step, self.model, self.optimizer, extra,
                                    keep_last=self.cfg.keep_last, tokenizer_file=self.tokenizer_file)

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict:
        cfg, plan = self.cfg, self.plan
        stop = plan.total_steps if cfg.max_steps is None else min(plan.total_steps, cfg.max_steps)
        log = MetricsLogger(self.run_dir, enabled=self.dist.is_main, total_steps=stop, start_step=self.step,
                            tensorboard=cfg.tensorboard, progress=cfg.progress)
        if self.dist.is_main and self.step == 0:
            log.message(f"training {self.model_config.arch} d{self.model_config.n_layer} "
                        f"({plan.non_embedding_params:,} non-embedding params, {plan.parametrization}) for "
                        f"{plan.total_steps} steps x {plan.batch_tokens:,} tokens "
                        f"(accum {plan.grad_accum}, world {plan.world_size}, {plan.parallel}, {plan.dtype}); "
                        f"lr {plan.lr:.3g} x {plan.lr_multipliers}")
        last_eval = {}
        pending = None  # the previous step's record, read while the device runs the current step
        try:
            while self.step < stop:
                launched = self.launch_step()
                if pending is not None:
                    self._report(materialize(pending), log, stop)
                pending = launched
                done = self.step == stop
                evaluate = bool(self.val_sets) and (self.step % cfg.eval_every == 0 or done)
                checkpoint = self.step % cfg.ckpt_every == 0 or done
                if evaluate or checkpoint:  # this step's line comes before the eval / save lines
                    self._report(materialize(pending), log, stop)
                    pending = None
                if evaluate:
                    last_eval = self.evaluate()
                    log.log({"step": self.step, "tokens": self.tokens, **last_eval})
                    log.message(f"step {self.step}: " + ", ".join(f"{k} {v:.4f}" for k, v in last_eval.items()))
                if checkpoint:
                    path = self.save()
                    if path is not None:
                        log.message(f"saved {path}")
                if evaluate or checkpoint:
                    self.throughput.restart()  # evaluation / saving time is not training throughput
        finally:
            log.close()
        return {"step": self.step, "tokens": self.tokens,
                "loss": self.history[-1]["loss"] if self.history else None, **last_eval}

    def _report(self, record: dict, log: MetricsLogger, stop: int) -> None:
        """Keep and log one finished step's record (throughput and MFU on the log_every steps). A non-finite
        loss stops the run here, before the step's checkpoint: no checkpoint is written or pruned after it."""
        if not math.isfinite(record["loss"]):
            raise TrainingDiverged(f"step {record['step']}: the training loss is {record['loss']}; stopped before "
                                   "writing or pruning any checkpoint. Resume from the last good one "
                                   f"({ckpt.find_latest(self.run_dir) or 'none yet'}) with a lower --eta0, or "
                                   "check the weights and data")
        self.history.append(record)
        if record["step"] % self.cfg.log_every == 0 or record["step"] == stop:
            record.update(self.throughput.tick())
            log.log(record)
        log.progress_update(record["step"], record["loss"], record)

    def close(self) -> None:
        """Release the wrapped model and optimizer, then leave the process group. DDP's reducer and FSDP hold
        the group: freed after it was destroyed (when `train` returned), the group's teardown ran outside the
        ranks' shared barrier and could hang."""
        self.par = self.model = self.optimizer = None
        gc.collect()
        D.shutdown()


class TrainingDiverged(TrainConfigError):
    """The loss became NaN or infinite; the run stopped before touching its checkpoints."""


def materialize(record: dict) -> dict:
    """A step record with its device tensors turned into Python floats (waits for the device)."""
    return {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in record.items()}


def train(cfg: TrainConfig) -> dict | None:
    """Build a `Trainer` for this process, run it, leave the process group; the summary on rank 0."""
    trainer = Trainer(cfg)
    try:
        summary = trainer.fit()
        return summary if trainer.dist.is_main else None
    finally:
        trainer.close()


def dry_run(cfg: TrainConfig) -> dict:
    """The resolved plan without building weights (meta device) or touching data."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    model_config = build_model_config(cfg)
    with torch.device("meta"):
        n = CausalLM(model_config, init=False).num_parameters(exclude_embeddings=True)
    dtype = cfg.dtype or ("bf16" if cfg.device == "cuda" else "fp32")
    parallel = cfg.parallel if cfg.parallel != "auto" else ("ddp" if world > 1 else "none")
    plan = resolve(cfg, model_config, n, world, parallel, dtype)
    return {"arch": model_config.arch, "depth": model_config.n_layer, "plan": plan.to_dict(),
            "flops_per_token": flops_per_token(model_config, plan.seq_len, n)}
