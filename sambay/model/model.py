"""`CausalLM`: token embedding -> self-decoder -> cross-decoder -> final norm -> LM head.

For SambaY the self-decoder is Samba (Mamba-1 / SWA alternating), then a Mamba layer that publishes the GMU
memory (`mamba_memory`) and a full-attention layer that publishes the one shared K/V (`full_kv`); the
cross-decoder alternates GMUs (gating that memory) and cross-attention (reading that K/V). Other
architectures of the family are other layer plans through the same code (a plan without a shared-K/V layer
has no cross-decoder).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn

from sambay.config import ModelConfig
from sambay.model import parametrization
from sambay.model.block import Block
from sambay.model.context import ForwardContext, document_ids_from_cu_seqlens
from sambay.model.norm import make_norm
from sambay.ops.cross_entropy import linear_cross_entropy


@dataclass
class CausalLMOutput:
    logits: torch.Tensor | None  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar, mean over non-ignored targets (fp32)
    hidden_states: list[torch.Tensor] | None = None  # residual entering each layer, then the final norm output


# A pytree node, so that hooks which look for tensors in a module's output find the loss inside: FSDP2 in
# torch < 2.13 flattens outputs with pytree and would otherwise never run the root's pre-backward hook.
pytree.register_dataclass(CausalLMOutput)


class CausalLM(nn.Module):
    def __init__(self, config: ModelConfig, init: bool = True):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layer))
        self.final_norm = make_norm(config.norm, config.d_model, config.norm_eps)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        # μP: logits are multiplied by d0/L (= base width / width since width = aspect_ratio · depth).
        self.logit_scale = config.mup_base_depth / config.n_layer if config.parametrization == "mup++" else 1.0
        if init:
            parametrization.init_weights(self)

    @property
    def head_weight(self) -> torch.Tensor:
        return self.embed.weight if self.lm_head is None else self.lm_head.weight

    def final_hidden(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm (and the μP logit multiplier) on the fp32 residual x (B, T, d), in the weight dtype."""
        h = self.final_norm(x.to(self.final_norm.weight.dtype))
        return h * self.logit_scale if self.logit_scale != 1.0 else h

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm + head on the fp32 residual x (B, T, d) -> logits (B, T, V) in the weight dtype."""
        return F.linear(self.final_hidden(x), self.head_weight)

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None, *,
                targets: torch.Tensor | None = None, document_ids: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, output_hidden_states: bool = False,
                return_logits: bool = True) -> CausalLMOutput:
        """Full-sequence forward (training and scoring).

        Args:
            input_ids: (B, T) token ids.
            labels: (B, T) Hugging Face style; position t is scored against labels[t + 1]; -100 is ignored.
            targets: (B, T) already aligned next-token targets (e.g. from the packed loader); -100 ignored.
            document_ids: (B, T) ints; attention is masked per document and Mamba conv/scan state resets at
                every change of id, so packed documents are independent sequences.
            cu_seqlens: (n_docs + 1,) boundaries of the documents in a single packed row (B = 1).
            return_logits: with `return_logits=False` and targets, the loss comes from the chunked fused
                linear + cross-entropy and the (B, T, V) logits are never materialised (large vocabularies).
        """
        if labels is not None and targets is not None:
            raise ValueError("pass either labels (shifted inside) or targets (already aligned), not both")
        if cu_seqlens is not None:
            if document_ids is not None or input_ids.shape[0] != 1:
                raise ValueError("cu_seqlens describes one packed row: use it with batch size 1 and no document_ids")
            document_ids = document_ids_from_cu_seqlens(cu_seqlens, input_ids.shape[1])
        ctx = ForwardContext.for_tokens(input_ids, document_ids, windows=self.config.attention_windows)
        x = self.embed(input_ids).float()  # the residual stream is kept in fp32
        hidden = [] if output_hidden_states else None
        for block in self.layers:  # self-decoder, then cross-decoder (reads ctx.memory / ctx.shared_kv)
            if hidden is not None:
                hidden.append(x)
            x = block(x, ctx)
        fused_loss = not return_logits and (labels is not None or targets is not None)
        logits = None if fused_loss else self.logits(x)
        if hidden is not None:
            hidden.append(self.final_norm(x.to(self.final_norm.weight.dtype)))
        if labels is not None:
            targets = F.pad(labels[:, 1:], (0, 1), value=-100)
        loss = None
        if targets is not None and fused_loss:
            loss = linear_cross_entropy(self.final_hidden(x).flatten(0, 1), self.head_weight, targets.flatten())
        elif targets is not None:
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-100)
        return CausalLMOutput(logits=logits, loss=loss, hidden_states=hidden)

    # Installed by `sambay.interop` (which builds on the model, never the other way round): the function that
    # writes a model to a checkpoint folder, save_pretrained(model, path, format=, max_shard_size=).
    checkpoint_writer: ClassVar[Callable | None] = None

    def save_pretrained(self, path, format: str = "sambay", max_shard_size: int | str = "5GB"):
        """Write config.json + safetensors to `path` in the "sambay" or "phi4flash" (Hugging Face) format.

        See `sambay.interop.pretrained.save_pretrained`; load back with `sambay.from_pretrained(path)`.
        """
        if CausalLM.checkpoint_writer is None:
            raise RuntimeError("no checkpoint writer installed: import sambay (or sambay.interop) first")
        return CausalLM.checkpoint_writer(self, path, format=format, max_shard_size=max_shard_size)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())
        if exclude_embeddings:
            n -= self.embed.weight.numel()
            if self.lm_head is not None:
                n -= self.lm_head.weight.numel()
        return n

    def optimizer_groups(self, lr: float, weight_decay: float = 0.1) -> list[dict]:
        """AdamW-ready parameter groups (μP++ vector/matrix split with LR multipliers, or one SP group)."""
        return parametrization.optimizer_groups(self, lr, weight_decay)
