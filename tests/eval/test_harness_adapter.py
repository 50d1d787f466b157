"""The lm-evaluation-harness model `sambay`: its numbers against the model's own log-softmax, `until`, and
real lm-eval runs of local tasks, offline; locally and against a `sambay serve`."""

import json

import pytest
import torch
from serve.serve_helpers import Server, write_chat_model

pytestmark = pytest.mark.eval  # needs the eval extra: CI installs it and runs pytest -m eval
lm_eval = pytest.importorskip("lm_eval")  # the eval extra; CI installs it for the `-m eval` step

from lm_eval.api.instance import Instance  # noqa: E402

import sambay.eval  # noqa: E402,F401  (registers the model)
from sambay import from_pretrained, load_tokenizer  # noqa: E402
from sambay.eval.harness import SambayLM  # noqa: E402


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_chat_model(tmp_path_factory.mktemp("harness") / "m", max_seq_len=128)


@pytest.fixture(scope="module")
def lm(folder):
    return SambayLM(pretrained=str(folder), batch_size=8)


def req(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def true_logprobs(folder, ids):
    model = from_pretrained(folder)
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    return [logp[i - 1, ids[i]].item() for i in range(1, len(ids))], [int(logp[i - 1].argmax()) for i in range(1, len(ids))]


def test_loglikelihood_is_the_sum_of_the_continuations_log_softmax(lm, folder):
    tok = load_tokenizer(folder)
    pairs = [("the quick brown", " fox jumps"), ("what is two", " plus two"), ("", "héllo wörld")]
    got = lm.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
    for (context, continuation), (value, greedy) in zip(pairs, got):
        ctx = tok.encode(context) if context else [lm.prefix_token_id]
        whole = tok.encode(context + continuation) if context else [lm.prefix_token_id] + tok.encode(continuation)
        n = len(whole) - len(ctx)
        lps, argmax = true_logprobs(folder, whole)
        assert value == pytest.approx(sum(lps[-n:]), abs=1e-3)
        assert greedy == all(a == t for a, t in zip(argmax[-n:], whole[-n:]))


def test_a_greedy_continuation_is_reported_greedy(lm):
    context = "the quick brown"
    (text,) = lm.generate_until([req("generate_until", context, {"until": [], "max_gen_toks": 3})])
    ((_, greedy),) = lm.loglikelihood([req("loglikelihood", context, text)])
    assert greedy


def test_rolling_loglikelihood_covers_every_token_once(lm, folder):
    tok = load_tokenizer(folder)
    text = "the quick brown fox jumps over the lazy dog " * 20  # longer than max_length 128: several windows
    ids = tok.encode(text)
    assert len(ids) > lm.max_length
    (total,) = lm.loglikelihood_rolling([req("loglikelihood_rolling", text)])
    per_window = []
    for start in range(0, len(ids), lm.max_length):
        chunk = ids[start:start + lm.max_length]
        context = [lm.prefix_token_id] if start == 0 else ids[start - lm.max_length + len(chunk):start]
        whole = (context + chunk)[-lm.max_length - 1:] if start else context + chunk
        lps, _ = true_logprobs(folder, whole[-(lm.max_length):] if len(whole) > lm.max_length else whole)
        per_window.append(sum(lps[-len(chunk):]))
    assert total == pytest.approx(sum(per_window), rel=1e-3)


def test_generate_until_stops_before_the_until_string(lm):
    (free,) = lm.generate_until([req("generate_until", "the lazy", {"until": [], "max_gen_toks": 12})])
    stop = free[len(free) // 2:len(free) // 2 + 2]
    assert stop and stop in free
    (cut,) = lm.generate_until([req("generate_until", "the lazy", {"until": [stop], "max_gen_toks": 12})])
    assert cut == free[:free.index(stop)]


def local_tasks(tmp_path):
    rows = [{"question": "what is two plus two?", "choices": [" four", " five", " fox"], "label": 0},
            {"question": "the quick brown", "choices": [" fox", " dog", " cat"], "label": 0}]
    data = tmp_path / "mc.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    text = tmp_path / "ppl.jsonl"
    text.write_text("\n".join(json.dumps({"text": "the quick brown fox jumps over the lazy dog " * k}) for k in (1, 3)))
    (tmp_path / "tiny_mc.yaml").write_text(f"""task: tiny_mc
dataset_path: json
dataset_kwargs:
  data_files: {{test: {data}}}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
""")
    (tmp_path / "tiny_ppl.yaml").write_text(f"""task: tiny_ppl
dataset_path: json
dataset_kwargs:
  data_files: {{test: {text}}}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
""")
    return tmp_path


def test_a_local_multiple_choice_and_perplexity_task_run_through_lm_eval_offline(lm, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(local_tasks(tmp_path)))
    results = lm_eval.simple_evaluate(model=lm, tasks=["tiny_mc", "tiny_ppl"], task_manager=manager)["results"]
    assert 0.0 <= results["tiny_mc"]["acc,none"] <= 1.0
    assert results["tiny_ppl"]["word_perplexity,none"] > 1.0


def test_the_same_numbers_against_a_running_server(folder, lm, tmp_path):
    server = Server(folder, log=tmp_path / "log")
    try:
        remote = SambayLM(base_url=server.base)
        pairs = [("the quick brown", " fox jumps"), ("what is two", " plus two")]
        here = lm.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
        there = remote.loglikelihood([req("loglikelihood", c, x) for c, x in pairs])
        for (a, ga), (b, gb) in zip(here, there):
            assert a == pytest.approx(b, abs=1e-4) and ga == gb
        args = {"until": [], "max_gen_toks": 6}
        assert lm.generate_until([req("generate_until", "the lazy", args)]) == \
            remote.generate_until([req("generate_until", "the lazy", args)])
    finally:
        server.stop()
