"""`Generator`: batches of mixed requests, stops, streaming, timings."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import ALL_PRESETS, make_model

from sambay import GenerationResult, Generator, SamplingParams
from sambay.engine import ByteTokenizer

GREEDY = SamplingParams(temperature=0, max_new_tokens=12)


def _prompts(lengths, seed=9):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (n,), generator=g).tolist() for n in lengths]


@pytest.mark.parametrize("preset", ALL_PRESETS)
def test_mixed_length_batch_gives_each_prompt_its_solo_greedy_tokens(preset):
    model = make_model(preset)
    prompts = _prompts([2, 7, 8, 15])
    params = [SamplingParams(temperature=0, max_new_tokens=n) for n in (12, 5, 9, 12)]  # finish at different times
    batched = Generator(model, chunk_size=4).generate(prompts, params)
    for prompt, p, result in zip(prompts, params, batched):
        alone = Generator(model, chunk_size=None).generate([prompt], p)[0]
        assert result.token_ids == alone.token_ids
        assert len(result.token_ids) == p.max_new_tokens and result.finish_reason == "length"


def test_more_requests_than_slots_wait_and_reuse_freed_slots():
    model = make_model("sambay")
    prompts = _prompts([3, 9, 4, 12, 6])
    params = [SamplingParams(temperature=0, max_new_tokens=n) for n in (3, 10, 6, 4, 8)]
    pooled = Generator(model, max_batch=2).generate(prompts, params)
    wide = Generator(model, max_batch=8).generate(prompts, params)
    assert [r.token_ids for r in pooled] == [r.token_ids for r in wide]
    assert [r.index for r in pooled] == list(range(5))


def test_seeded_request_gives_the_same_tokens_in_any_batch():
    model = make_model("sambay")
    target, *others = _prompts([5, 3, 11])
    p = SamplingParams(temperature=0.8, top_p=0.9, seed=1234, max_new_tokens=10)
    alone = Generator(model).generate([target], p)[0].token_ids
    mixed = Generator(model).generate([others[0], target, others[1]],
                                      [SamplingParams(temperature=1.0, max_new_tokens=4), p, GREEDY])
    assert mixed[1].token_ids == alone


def test_stop_token_ends_the_request_and_is_kept_in_ids_not_text():
    model = make_model("sambay")
    prompt = _prompts([6])[0]
    free = Generator(model, ByteTokenizer()).generate(prompt, SamplingParams(temperature=1.0, seed=5, max_new_tokens=12))[0]
    stop_at = 4
    stop_id = free.token_ids[stop_at]
    first = free.token_ids.index(stop_id)
    r = Generator(model, ByteTokenizer()).generate(
        prompt, SamplingParams(temperature=1.0, seed=5, max_new_tokens=12, stop_token_ids=[stop_id]))[0]
    assert r.token_ids == free.token_ids[:first + 1]
    assert r.finish_reason == "stop" and r.stop_reason == stop_id
    assert r.text == ByteTokenizer().decode(free.token_ids[:first])


def test_config_eos_stops_unless_ignore_eos():
    model = make_model("sambay")
    prompt = _prompts([6])[0]
    first = Generator(model).generate(prompt, GREEDY)[0].token_ids[0]
    model.config = model.config.replace(eos_token_id=first)
    assert Generator(model).generate(prompt, GREEDY)[0].token_ids == [first]
    ignored = SamplingParams(temperature=0, max_new_tokens=12, ignore_eos=True)
    assert len(Generator(model).generate(prompt, ignored)[0].token_ids) == 12


def test_stop_string_cuts_the_text_and_streaming_never_shows_it():
    model = make_model("sambay")
    gen = Generator(model, ByteTokenizer())
    sampling = dict(temperature=1.0, seed=3, max_new_tokens=16, top_k=20)
    prompt = "hello"
    free = gen.generate(prompt, SamplingParams(**sampling))[0]
    text = free.text
    stop = text[5:7] if len(text) >= 7 else text[-2:]
    cut = text.index(stop)
    r = gen.generate(prompt, SamplingParams(**sampling, stop=[stop]))[0]
    assert r.text == text[:cut] and r.finish_reason == "stop" and r.stop_reason == stop
    chunks = list(gen.stream(prompt, SamplingParams(**sampling, stop=[stop])))
    assert "".join(c.text for c in chunks) == r.text
    assert [c.token_id for c in chunks] == r.token_ids
    assert chunks[-1].finish_reason == "stop" and all(c.finish_reason is None for c in chunks[:-1])


def test_stream_yields_every_token_with_the_final_result_attached():
    model = make_model("samba")
    prompts = _prompts([4, 10])
    params = [SamplingParams(temperature=0, max_new_tokens=n) for n in (3, 6)]
    results = Generator(model, ByteTokenizer()).generate(prompts, params)
    chunks = list(Generator(model, ByteTokenizer()).stream(prompts, params))
    for r in results:
        mine = [c for c in chunks if c.index == r.index]
        assert [c.token_id for c in mine] == r.token_ids
        assert "".join(c.text for c in mine) == r.text
        assert isinstance(mine[-1].result, GenerationResult) and mine[-1].result.token_ids == r.token_ids


def test_result_fields_and_timings():
    model = make_model("sambay")
    r = Generator(model, ByteTokenizer()).generate(["abc", "de"], GREEDY)
    assert [x.prompt_token_ids for x in r] == [[97, 98, 99], [100, 101]]
    for x in r:
        assert isinstance(x.text, str) and x.finish_reason == "length"
        t = x.timings
        assert t.prefill_s > 0 and t.decode_s > 0 and t.decode_tokens_per_s > 0
        assert t.time_to_first_token_s >= t.prefill_s
    no_tok = Generator(model).generate([[1, 2]], GREEDY)[0]
    assert no_tok.text is None
    zero = Generator(model).generate([[1, 2]], SamplingParams(max_new_tokens=0))[0]
    assert zero.token_ids == [] and zero.finish_reason == "length"


def test_generation_stops_at_the_models_max_seq_len():
    model = make_model("sambay", max_seq_len=20)
    r = Generator(model).generate([list(range(15))], SamplingParams(temperature=0, max_new_tokens=50))[0]
    assert len(r.token_ids) == 5 and r.finish_reason == "length"


def test_bad_prompts_are_rejected_with_clear_errors():
    gen = Generator(make_model("sambay"))
    with pytest.raises(ValueError, match="tokenizer"):
        gen.generate("text needs a tokenizer")
    with pytest.raises(ValueError, match="vocabulary"):
        gen.generate([[1, 999]])
    with pytest.raises(ValueError, match="empty"):
        gen.generate([[]])
    with pytest.raises(ValueError, match="2 SamplingParams for 1 prompts"):
        gen.generate([[1]], [GREEDY, GREEDY])


def test_compile_without_cuda_graphs_is_rejected():
    with pytest.raises(ValueError, match="compile=True compiles the CUDA-graph decode step"):
        Generator(make_model("sambay"), compile=True)


def test_an_abandoned_stream_gives_its_slots_back():
    gen = Generator(make_model("sambay"), max_batch=2)
    stream = gen.stream(_prompts([3, 4]), GREEDY)
    next(stream)
    stream.close()
    assert gen.state.free_slots == 2
