"""Scaling-law fits ``L(X) = A * X**(-b) + C``, done the way ArchScale's ``plot_*_scaling.py`` does them.

* ``axis="compute"``: X = training FLOPs ``6*N*T`` with N, T from the Transformer++ formula for every
  architecture (``N = 14.5 * 128**2 * L**3``, ``T = 1e11 * N / n0``, ``n0 = 237568 * 16**3``), so
  parameter-matched architectures share the x-axis. A run that records its ``tokens`` uses them as T (a
  run trained off the paper's budget is placed where its compute really was). X is in raw FLOPs (9.12e18 ... 6.65e21 for d8...d24):
  the published A values (39.79, 40.57, 49.64, ...) are only reproduced with raw FLOPs, not e.g. PFLOPs.
* ``axis="tokens"``: X = D in billions of tokens.

Fit: ``scipy.optimize.curve_fit`` with bounds ``A >= 0``, ``1e-6 <= b <= 1``, ``0 <= C <= min(loss)``,
start ``C = 0.95 * min(loss)``, ``b = 0.05`` (compute) / ``0.1`` (tokens), A from the first point.
Uncertainties are 1-sigma from the covariance (absolute_sigma=False: scaled by the residuals).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

N0 = 237568 * 16**3  # Transformer++ d16 reference size used for the token budget

# The SambaY paper's scaling study: validation losses (SlimPajama) at depth 8, 12, 16, 20, 24.
PUBLISHED_DEPTHS = (8, 12, 16, 20, 24)
PUBLISHED_LOSSES = {
    "transformer++ SP": (2.6746, 2.2836, 2.0831, 1.9454, 1.8360),
    "transformer++ muP": (2.5972, 2.2647, 2.0682, 1.9263, 1.8252),
    "transformer++ muP++": (2.5621, 2.2440, 2.0505, 1.9164, 1.8172),
    "samba+yoco muP++": (2.5014, 2.2040, 2.0213, 1.8957, 1.7993),
    "sambay muP++": (2.5051, 2.2073, 2.0227, 1.8963, 1.7999),
}
# The paper's compute-axis fits (A, b, C) of those losses; the muP row is a refit, not on the poster.
PUBLISHED_FITS = {
    "transformer++ SP": (239.90, 0.12, 1.11),
    "transformer++ muP": (54.5, 0.076, 0.64),
    "transformer++ muP++": (49.64, 0.07, 0.64),
    "samba+yoco muP++": (40.57, 0.07, 0.61),
    "sambay muP++": (39.79, 0.07, 0.58),
}
AXES = ("compute", "tokens")


def transformer_pp_params(depth: float) -> float:
    """Non-embedding parameter count N of Transformer++ at depth L (width 128·L)."""
    return 14.5 * 128**2 * depth**3


def transformer_pp_flops(depth: float) -> float:
    """Training FLOPs 6·N·T with the Transformer++ N and token budget T = 1e11·N/n0."""
    n = transformer_pp_params(depth)
    return 6.0 * n * (1e11 * n / N0)


def power_law(x: np.ndarray, a: float, b: float, c: float) -> np.ndarray:
    return a * np.power(x, -b) + c


@dataclass(frozen=True)
class ScalingFit:
    A: float
    b: float
    C: float
    A_err: float
    b_err: float
    C_err: float
    axis: str
    n: int  # number of points

    def predict(self, x) -> np.ndarray:
        return power_law(np.asarray(x, dtype=float), self.A, self.b, self.C)

    def format(self) -> str:
        return (f"A = {self.A:.2f} ± {self.A_err:.2f}, b = {self.b:.4f} ± {self.b_err:.4f}, "
                f"C = {self.C:.3f} ± {self.C_err:.3f}")


def fit_scaling_law(x: Sequence[float], loss: Sequence[float], axis: str = "compute") -> ScalingFit:
    """Fit ``loss = A * x**(-b) + C``. x: (n,) FLOPs or billions of tokens; loss: (n,). Needs n >= 3."""
    from scipy.optimize import OptimizeWarning, curve_fit

    if axis not in AXES:
        raise ValueError(f"axis must be one of {AXES}, got {axis!r}")
    x = np.asarray(x, dtype=float)
    y = np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"x and loss must be 1-D of equal length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"need at least 3 points to fit A, b, C; got {len(x)}")
    if np.any(x <= 0) or not np.isfinite(y).all():
        raise ValueError("x must be positive and losses finite")
    y_min = float(y.min())
    b0 = 0.05 if axis == "compute" else 0.1
    c0 = 0.95 * y_min
    i0 = int(np.argmin(x))
    a0 = max((y[i0] - c0) * x[i0] ** b0, 1e-12)
    with warnings.catch_warnings():
        # with exactly 3 points the covariance is undefined; reported as inf below
        warnings.simplefilter("ignore", OptimizeWarning)
        popt, pcov = curve_fit(power_law, x, y, p0=[a0, b0, c0],
                               bounds=([0.0, 1e-6, 0.0], [np.inf, 1.0, y_min]), maxfev=100_000)
    errs = np.sqrt(np.clip(np.diag(pcov), 0, None)) if np.isfinite(pcov).all() else [math.inf] * 3
    return ScalingFit(*map(float, popt), *map(float, errs), axis=axis, n=len(x))


# ---- runs ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    arch: str
    val_loss: float
    depth: int | None = None
    tokens: float | None = None  # training tokens (raw count)
    source: str = ""
    label: str = ""  # the fit group: arch + parametrization (SP and μP++ runs must not share a fit)

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", self.arch)

    def x(self, axis: str) -> float:
        """The run's coordinate: Transformer++ FLOPs at its depth (6·N·T, T its own tokens when recorded,
        else the paper's budget for the depth), or billions of tokens."""
        if axis == "compute":
            if self.depth is None:
                raise ValueError(f"{self.source}: run of {self.arch} has no depth (needed for --axis compute)")
            if self.tokens is not None:
                return 6.0 * transformer_pp_params(self.depth) * self.tokens
            return transformer_pp_flops(self.depth)
        if self.tokens is None:
            raise ValueError(f"{self.source}: run of {self.arch} has no tokens (needed for --axis tokens)")
        return self.tokens / 1e9


def _lookup(d: dict, keys: Iterable[str]):
    for key in keys:
        node = d
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return None


def _run_from_record(rec: dict, source: str) -> Run:
    if not isinstance(rec, dict):
        raise ValueError(f"{source}: expected a JSON object, got {type(rec).__name__}")
    arch = _lookup(rec, ("arch", "model.arch", "model.name", "name"))
    loss = rec.get("val_loss")
    if arch is None or loss is None:
        raise ValueError(f"{source}: a run record needs 'arch' and 'val_loss' (keys: {sorted(rec)})")
    depth = _lookup(rec, ("depth", "model.depth", "n_layer", "model.n_layer"))
    tokens = rec.get("tokens")
    if tokens is None and rec.get("tokens_b") is not None:
        tokens = float(rec["tokens_b"]) * 1e9
    param = _lookup(rec, ("parametrization", "model.parametrization"))
    label = rec.get("label") or (f"{arch} {param}" if param else str(arch))
    return Run(str(arch), float(loss), None if depth is None else int(depth),
               None if tokens is None else float(tokens), source, str(label))


def _run_from_dir(path: Path) -> Run:
    metrics, config = path / "metrics.jsonl", path / "config.json"
    for f in (metrics, config):
        if not f.is_file():
            raise ValueError(f"{path}: run directory has no {f.name}")
    last = None
    tokens = None
    for lineno, line in enumerate(metrics.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{metrics}:{lineno}: invalid JSON ({e.msg})") from e
        if rec.get("val_loss") is not None:
            last = rec
        tokens = rec.get("tokens", tokens)
    if last is None:
        raise ValueError(f"{metrics}: no entry with a 'val_loss'")
    cfg = json.loads(config.read_text())
    rec = {"arch": _lookup(cfg, ("arch", "model.arch", "model.name", "name")),
           "depth": _lookup(cfg, ("depth", "model.depth", "n_layer", "model.n_layer")),
           "parametrization": _lookup(cfg, ("parametrization", "model.parametrization")),
           "label": cfg.get("label"),
           "val_loss": last["val_loss"], "tokens": last.get("tokens", tokens)}
    return _run_from_record(rec, str(path))


def load_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Runs from JSON files (an object, a list, or ``{"runs": [...]}``), JSONL files (one run a line),
    or run directories (last ``val_loss`` in metrics.jsonl + arch/depth from config.json).

    Record keys: ``arch``, ``val_loss``, ``depth`` (compute axis), ``tokens`` or ``tokens_b`` (tokens
    axis), optional ``parametrization`` (joins the fit label, e.g. "sambay mup++") or ``label``.
    """
    runs: list[Run] = []
    for p in map(Path, paths):
        if p.is_dir():
            runs.append(_run_from_dir(p))
        elif not p.is_file():
            raise ValueError(f"run file not found: {p}")
        elif p.suffix in (".jsonl", ".ndjson"):
            for lineno, line in enumerate(p.read_text().splitlines(), start=1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{p}:{lineno}: invalid JSON ({e.msg})") from e
                    runs.append(_run_from_record(rec, f"{p}:{lineno}"))
        else:
            data = json.loads(p.read_text())
            records = data.get("runs", [data]) if isinstance(data, dict) else data
            runs += [_run_from_record(r, f"{p}[{i}]") for i, r in enumerate(records)]
    return runs


def published_runs() -> list[Run]:
    """The published losses (``PUBLISHED_LOSSES``) as runs (one per architecture and depth)."""
    return [Run(arch.split()[0], loss, depth, source="published SlimPajama losses", label=arch)
            for arch, losses in PUBLISHED_LOSSES.items() for depth, loss in zip(PUBLISHED_DEPTHS, losses)]


def fit_runs(runs: Sequence[Run], axis: str = "compute") -> dict[str, ScalingFit]:
    """One fit per label (architecture + parametrization), in first-seen order."""
    groups: dict[str, list[Run]] = {}
    for r in runs:
        groups.setdefault(r.label, []).append(r)
    return {arch: fit_scaling_law([r.x(axis) for r in rs], [r.val_loss for r in rs], axis)
            for arch, rs in groups.items()}


def plot_fits(runs: Sequence[Run], fits: dict[str, ScalingFit], out: str | Path) -> list[Path]:
    """Write ``out`` (all architectures) and, with several, ``out_<arch>.png`` each. Needs matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    written = []
    groups = [list(fits)] + ([[a] for a in fits] if len(fits) > 1 else [])
    for archs in groups:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for arch in archs:
            fit = fits[arch]
            pts = [(r.x(fit.axis), r.val_loss) for r in runs if r.label == arch]
            xs = np.array([p[0] for p in pts])
            grid = np.geomspace(xs.min() / 1.5, xs.max() * 1.5, 200)
            line = ax.plot(grid, fit.predict(grid), label=f"{arch}: {fit.A:.2f}·X^(-{fit.b:.3f}) + {fit.C:.2f}")
            ax.scatter(xs, [p[1] for p in pts], color=line[0].get_color(), zorder=3)
        ax.set_xscale("log")
        ax.set_xlabel("training FLOPs (Transformer++ formula)" if fits[archs[0]].axis == "compute"
                      else "training tokens (billions)")
        ax.set_ylabel("validation loss")
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
        safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in archs[0])
        path = out if len(archs) > 1 or len(groups) == 1 else out.with_name(f"{out.stem}_{safe}{out.suffix}")
        fig.tight_layout()
        fig.savefig(path, dpi=150)
        plt.close(fig)
        written.append(path)
    return written
