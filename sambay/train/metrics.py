"""Throughput, MFU and logging sinks (JSONL always; TensorBoard when installed; a progress bar on rank 0).

FLOPs per trained token (forward + backward = 3 × forward):
* matmuls: 6 · N, N = every weight applied per token = non-embedding parameters + the LM head (the input
  embedding is a lookup, not a matmul; with tied embeddings the head is still one V×d matmul);
* what each mixer adds beyond its weights (`Mixer.flops_per_token`, forward, times 3): for attention
  4 · n_head · head_dim · c, with c the mean number of keys a query sees under the causal (and
  sliding-window) mask — so causal attention counts T/2, not T (PaLM's 12·L·H·Q·T counts the masked half
  too). The selective scan and convolutions (O(d_inner · d_state) per token) are left out: < 1 % at the
  research widths. MFU = FLOPs/token × tokens/s ÷ (peak FLOP/s per device × devices).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

# Dense bf16 tensor-core peaks (FLOP/s) from the vendors' data sheets; matched as substrings of the name.
KNOWN_BF16_PEAKS = (("H200", 989.4e12), ("H100 PCIe", 756.0e12), ("H100", 989.4e12), ("A100", 312.0e12),
                    ("L40S", 362.1e12), ("A10G", 70.0e12))


def flops_per_token(model_config, seq_len: int, non_embedding_params: int) -> float:
    """Training FLOPs per token (see the module docstring)."""
    c = model_config
    dense = 6.0 * (non_embedding_params + c.vocab_size * c.d_model)
    return dense + 3.0 * sum(spec.mixer_class.flops_per_token(c, seq_len) for spec in c.layers)


def known_peak_flops(device: torch.device, dtype: str) -> float | None:
    """Per-device peak for bf16 on a known GPU, else None (MFU is then not reported)."""
    if device.type != "cuda" or dtype != "bf16":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in KNOWN_BF16_PEAKS if key in name), None)


def measure_matmul_peak(device: torch.device, dtype: torch.dtype = torch.bfloat16, n: int = 8192,
                        iters: int = 50) -> float:
    """Achieved FLOP/s of a large square matmul (the practical roofline MFU can be compared to)."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t = time.perf_counter()
    for _ in range(iters):
        a @ b
    sync()
    return 2.0 * n**3 * iters / (time.perf_counter() - t)


class Throughput:
    """Tokens/s and MFU over the steps since the last `tick`."""

    def __init__(self, flops_per_token: float, peak_flops: float | None, world_size: int):
        self.flops_per_token, self.peak, self.world = flops_per_token, peak_flops, world_size
        self.t = time.perf_counter()
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.tokens += tokens

    def restart(self) -> None:
        """Forget the time and tokens since the last tick (called after evaluation / checkpointing)."""
        self.t, self.tokens = time.perf_counter(), 0

    def tick(self) -> dict:
        now = time.perf_counter()
        dt = max(now - self.t, 1e-9)
        tps = self.tokens / dt
        out = {"tokens_per_s": tps}
        if self.peak:
            out["mfu"] = tps * self.flops_per_token / (self.peak * self.world)
        self.t, self.tokens = now, 0
        return out


class MetricsLogger:
    """Rank-0 sinks: `<run_dir>/metrics.jsonl` (one JSON object per log event), TensorBoard, progress bar.

    Other ranks get a logger that does nothing, so the trainer calls it unconditionally.
    """

    def __init__(self, run_dir: str | Path, *, enabled: bool, total_steps: int, start_step: int = 0,
                 tensorboard: bool | None = None, progress: bool = True):
        self.enabled = enabled
        self.bar = None
        self._rates: dict[str, float] = {}  # the latest measured tokens/s and MFU, for the progress bar
        self.tb = None
        if not enabled:
            return
        self.path = Path(run_dir) / "metrics.jsonl"
        self.file = open(self.path, "a", encoding="utf-8")
        if tensorboard is not False:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            except ImportError:
                if tensorboard:
                    print("warning: --tensorboard requested but tensorboard is not installed", file=sys.stderr)
        if progress:
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None
        self.progress = progress

    def log(self, record: dict) -> None:
        """Append one record (must hold "step"); floats are written as plain JSON numbers."""
        if not self.enabled:
            return
        clean = {k: (float(v) if isinstance(v, torch.Tensor) else v) for k, v in record.items()}
        self.file.write(json.dumps(clean) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in clean.items():
                if isinstance(v, (int, float)) and k != "step" and math.isfinite(v):
                    self.tb.add_scalar(k, v, clean["step"])

    def progress_update(self, step: int, loss: float, rates: dict) -> None:
        if not (self.enabled and self.progress):
            return
        # rates are measured on the log_every steps: show the latest measured ones in between (not 0)
        self._rates.update({k: rates[k] for k in ("tokens_per_s", "mfu") if k in rates})
        parts = {"loss": f"{loss:.4f}"}
        if "tokens_per_s" in self._rates:
            parts["tok/s"] = f"{self._rates['tokens_per_s']:,.0f}"
        if "mfu" in self._rates:
            parts["mfu"] = f"{100 * self._rates['mfu']:.1f}%"
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(parts, refresh=True)
        else:
            print(f"step {step} " + " ".join(f"{k} {v}" for k, v in parts.items()), file=sys.stderr)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.close()
        if self.tb is not None:
            self.tb.close()
        self.file.close()


def truncate_metrics(run_dir: str | Path, last_step: int) -> None:
    """On resume: drop records logged after the checkpoint step (they are about to be recomputed), so the
    JSONL holds one curve. Rewritten through a temporary file + rename."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        return
    keep = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:  # a line cut by the kill
            continue
        if rec.get("step", 0) <= last_step:
            keep.append(line)
    tmp = path.with_name(".metrics.jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in keep), encoding="utf-8")
    tmp.replace(path)
