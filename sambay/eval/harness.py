"""An lm-evaluation-harness model backed by sambay's engine, registered as `sambay`.

    lm_eval --model sambay --model_args pretrained=DIR[,batch_size=...,max_length=...,dtype=bfloat16,device=cuda]
    lm_eval --model sambay --model_args base_url=http://127.0.0.1:8000[,api_key=...,model=NAME]

It implements `loglikelihood` (through lm-eval's own context / continuation tokenisation), the rolling
loglikelihood of whole documents (lm-eval's disjoint windows of max_length tokens) and `generate_until`,
each as one batch through the engine (or concurrently against a server). Needs `pip install "sambay[eval]"`.
"""

from __future__ import annotations

from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from sambay.engine import SamplingParams
from sambay.eval.backend import LocalBackend, RemoteBackend


@register_model("sambay")
class SambayLM(TemplateLM):
    def __init__(self, pretrained: str | None = None, base_url: str | None = None, api_key: str | None = None,
                 model: str | None = None, tokenizer: str | None = None, max_length: int | None = None,
                 batch_size: int | str = 64, dtype: str | None = None, device: str | None = None,
                 max_gen_toks: int = 256, **unused):
        super().__init__()
        if (pretrained is None) == (base_url is None):
            raise ValueError("give exactly one of pretrained=DIR (a local model) and base_url=URL (a sambay serve)")
        self.batch_size = int(batch_size) if str(batch_size).isdigit() else 64
        self.max_gen_toks = int(max_gen_toks)
        if base_url is not None:
            self.backend_ = RemoteBackend(base_url, api_key=api_key, model=model)
            self.tok = self.backend_.tokenizer
            self._eot = None
        else:
            import torch

            from sambay import from_pretrained, load_tokenizer

            device = device or ("cuda" if torch.cuda.is_available() else "cpu")
            net = from_pretrained(pretrained, dtype=getattr(torch, dtype) if dtype else None, device=device)
            self.tok = load_tokenizer(tokenizer or pretrained)
            self._eot = self.tok.eos_token_ids[0] if self.tok.eos_token_ids else None
            self.backend_ = LocalBackend(net, self.tok, max_num_seqs=self.batch_size,
                                         max_model_len=int(max_length) if max_length else None)
        self.max_length = int(max_length) if max_length else self.backend_.max_model_len

    # ------------------------------------------------------------------ tokens
    @property
    def eot_token_id(self) -> int:
        if self._eot is None:
            raise ValueError("this model's end-of-text token is unknown (a remote model): lm-eval needs it for "
                             "empty contexts")
        return self._eot

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        return self.tok.encode(string)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tok.decode(tokens)

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tok, "path", "sambay"))

    # ------------------------------------------------------------------ scoring
    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        """((context, continuation), context ids, continuation ids) -> (sum of the continuation's
        log-probabilities, whether every continuation token is the argmax), the context cut on the left to
        fit max_length."""
        sequences, spans = [], []
        for _, context, continuation in requests:
            whole = (context + continuation)[-self.max_length:]
            sequences.append(whole)
            spans.append(len(continuation))
        results = []
        for rows, n in zip(self.backend_.score(sequences), spans):
            tail = rows[-n:]
            results.append((sum(lp for lp, _ in tail), all(greedy for _, greedy in tail)))
        return results

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owners = [], []
        for i, (text,) in enumerate(req.args for req in requests):
            pieces = get_rolling_token_windows(token_list=self.tok_encode(text), prefix_token=self.prefix_token_id,
                                               max_seq_len=self.max_length, context_len=1)
            for context, continuation in map(make_disjoint_window, pieces):
                windows.append((None, context, continuation))
                owners.append(i)
        totals = [0.0] * len(requests)
        for owner, (lp, _) in zip(owners, self._loglikelihood_tokens(windows)):
            totals[owner] += lp
        return totals

    # ------------------------------------------------------------------ generation
    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        groups: dict[tuple, list[int]] = {}
        for i, req in enumerate(requests):
            _, kwargs = req.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            key = (tuple(until), int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                   float(kwargs.get("temperature", 0.0)) if kwargs.get("do_sample", False) else 0.0)
            groups.setdefault(key, []).append(i)
        out = [""] * len(requests)
        for (until, max_new, temperature), members in groups.items():
            params = SamplingParams(max_new_tokens=max_new, temperature=temperature, stop=until,
                                    seed=1234 if temperature else None)
            prompts = []
            for i in members:
                ids = self.tok_encode(requests[i].args[0])
                prompts.append(ids[-(self.max_length - max_new):] if self.max_length > max_new else ids[-1:])
            for i, (completion,) in zip(members, self.backend_.generate(prompts, params)):
                text = completion.text
                for stop in until:  # a server may include the stop string; lm-eval wants the text before it
                    text = text.split(stop)[0] if stop else text
                out[i] = text
        return out
