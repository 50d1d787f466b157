"""Training checkpoints: atomic, resumable, and loadable by `sambay.from_pretrained`.

Layout (one directory per checkpoint, under `<run_dir>/checkpoints/`):

    step-00001000/
        config.json          ModelConfig (the "sambay" folder format: `from_pretrained(this_dir)` works)
        model.safetensors    full (consolidated) fp32 weights, written by `sambay.interop.save_pretrained`
        train_state.pt       optimizer state (keyed by parameter name), step, tokens, loader position,
                             per-rank RNG states, the TrainPlan — loaded with `weights_only=True`

Atomicity: rank 0 writes everything into a hidden `.tmp-step-…` directory, fsyncs each file, then renames
the directory to `step-…` in one `os.rename` (atomic on POSIX within a filesystem). A crash at any moment
leaves either no new `step-…` directory (the previous checkpoint is untouched and `--resume auto` picks
it) or a complete one. Stale `.tmp-*` directories from a crash are removed by the next save.

Optimizer and model state go through `torch.distributed.checkpoint.state_dict` with full state dicts, so
one format serves single-process, DDP and FSDP2 runs, and a run may resume with another parallel mode.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import uuid
from pathlib import Path

import numpy as np
import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from sambay.interop.sharded_save import fsync_dir
from sambay.train import distributed as D

STEP_DIR = re.compile(r"^step-(\d{8})$")
TRAIN_STATE = "train_state.pt"
FORMAT_VERSION = 1


class CheckpointReadError(RuntimeError):
    """A checkpoint's files cannot be read (truncated, corrupt or missing); the message names the file."""


class CheckpointMismatchError(RuntimeError):
    """A readable checkpoint of another model (different parameters or shapes)."""


def checkpoint_root(run_dir: str | os.PathLike) -> Path:
    return Path(run_dir) / "checkpoints"


def list_checkpoints(run_dir: str | os.PathLike) -> list[tuple[int, Path]]:
    """Complete checkpoints as (step, path), oldest first. Temporary directories are never listed."""
    root = checkpoint_root(run_dir)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and p.is_dir() and (p / TRAIN_STATE).is_file():
            found.append((int(m.group(1)), p))
    return sorted(found)


def find_latest(run_dir: str | os.PathLike) -> Path | None:
    ckpts = list_checkpoints(run_dir)
    return ckpts[-1][1] if ckpts else None


# ------------------------------------------------------------------------------------------ RNG
def rng_state() -> dict:
    """This process's RNG states, as tensors/ints/lists only (loadable with weights_only=True)."""
    np_state = np.random.get_state(legacy=False)
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": {"key": np_state["state"]["key"].tolist(), "pos": int(np_state["state"]["pos"]),
                       "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(tuple(x) if isinstance(x, list) else x for x in state["python"]))
    n = state["numpy"]
    np.random.set_state({"bit_generator": "MT19937", "state": {"key": np.array(n["key"], dtype=np.uint32),
                                                                 "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


# ------------------------------------------------------------------------------------------ files
def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _write_model_folder(config, model_state: dict, folder: Path) -> None:
    """config.json + model.safetensors through the interop writer (no second copy of the weights:
    a meta-device model adopts the consolidated tensors with `assign=True`)."""
    from sambay.interop import save_pretrained
    from sambay.interop.pretrained import empty_model

    shell = empty_model(config)
    shell.load_state_dict(model_state, strict=True, assign=True)
    save_pretrained(shell, folder, format="sambay")


def save_checkpoint(run_dir: str | os.PathLike, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, extra: dict, keep_last: int = 3,
                    tokenizer_file: str | os.PathLike | None = None) -> Path | None:
    """Collective: every rank calls it. Rank 0 writes `<run_dir>/checkpoints/step-XXXXXXXX` atomically and
    prunes to the newest `keep_last`. Returns the path on rank 0, None elsewhere.

    model: the plain `CausalLM` (FSDP2-sharded or not; not the DDP wrapper).
    extra: small picklable-by-weights_only state (step, tokens, loader state, plan, ...).
    tokenizer_file: copied in as tokenizer.json, so the checkpoint loads and generates with nothing else.
    """
    msd, osd = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    rngs = D.all_gather_object(rng_state())
    path = None
    if D.get_rank() == 0:
        root = checkpoint_root(run_dir)
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-*"):  # left behind by a crash during an earlier save
            shutil.rmtree(stale, ignore_errors=True)
        final = root / f"step-{step:08d}"
        tmp = root / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            _write_model_folder(model.config, msd, tmp)  # save_pretrained fsyncs the weights itself
            if tokenizer_file is not None:
                shutil.copyfile(tokenizer_file, tmp / "tokenizer.json")
            state = dict(extra, version=FORMAT_VERSION, step=step, optimizer=osd, rng=rngs)
            torch.save(state, tmp / TRAIN_STATE)
            for f in tmp.iterdir():
                _fsync_file(f)
            fsync_dir(tmp)
            if final.exists():  # re-saving a step (e.g. after a resume): swap, then drop the old one
                old = root / f".tmp-old-{final.name}-{uuid.uuid4().hex[:8]}"
                os.rename(final, old)
                os.rename(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.rename(tmp, final)  # the commit point
            fsync_dir(root)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in list_checkpoints(run_dir)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
        path = final
    D.barrier()
    return path


def load_checkpoint(path: str | os.PathLike, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer | None, rank: int = 0) -> dict:
    """Collective: every rank reads the checkpoint and keeps its part (FSDP2 shards) of the full state.

    Restores model weights, optimizer state and this rank's RNG; returns the saved `extra` dict (step,
    tokens, loader state, ...). With `optimizer=None` only the weights are loaded.
    """
    from sambay.interop.tensor_loading import load_safetensors_folder

    path = Path(path)
    try:
        state = torch.load(path / TRAIN_STATE, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, bad pickle opcode, missing file: all mean the same thing here
        raise CheckpointReadError(f"{path / TRAIN_STATE} cannot be read ({type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    if not isinstance(state, dict) or state.get("version") != FORMAT_VERSION:
        raise CheckpointReadError(f"{path}: unsupported checkpoint version "
                                  f"{state.get('version') if isinstance(state, dict) else type(state).__name__}")
    msd = load_safetensors_folder(path)  # one file or shards + index; CheckpointError naming the file
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in msd.items()}
    if ours != theirs:
        diff = sorted(set(ours) ^ set(theirs)) or sorted(k for k in ours if ours[k] != theirs[k])
        raise CheckpointMismatchError(f"{path} holds another model ({len(theirs)} tensors vs this model's "
                                      f"{len(ours)}; first difference: {diff[0]})")
    opts = StateDictOptions(full_state_dict=True, strict=True)
    if optimizer is None:
        set_state_dict(model, optimizers=(), model_state_dict=msd, optim_state_dict={}, options=opts)
    else:
        set_state_dict(model, optimizer, model_state_dict=msd, optim_state_dict=state["optimizer"], options=opts)
    rngs = state["rng"]
    if rank < len(rngs):
        set_rng_state(rngs[rank])
    state.pop("optimizer")
    return state
