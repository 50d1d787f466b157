import pytest
from serve_helpers import Server, write_chat_model

from sambay import Generator, from_pretrained, load_tokenizer


@pytest.fixture(scope="session")
def chat_model_dir(tmp_path_factory):
    # its generation_config.json asks for greedy decoding: the `server` fixture ignores that, `reasoning_server`
    # applies it
    return write_chat_model(tmp_path_factory.mktemp("serve") / "tiny-chat", generation_config={"temperature": 0.0})


@pytest.fixture(scope="session")
def server(chat_model_dir, tmp_path_factory):
    """One `sambay serve` for the module's tests (OpenAI defaults: no generation_config sampling)."""
    s = Server(chat_model_dir, "--generation-config", "none", "--max-num-seqs", "8",
               log=tmp_path_factory.mktemp("logs") / "server.log")
    yield s
    s.stop()


@pytest.fixture(scope="session")
def offline(chat_model_dir):
    """The same model through the offline Generator: what the server must reproduce."""
    tokenizer = load_tokenizer(chat_model_dir)
    return Generator(from_pretrained(chat_model_dir), tokenizer, max_batch=4), tokenizer


@pytest.fixture(scope="session")
def reasoning_server(chat_model_dir, tmp_path_factory):
    """With an API key, the deepseek_r1 reasoning parser and the folder's generation_config.json."""
    s = Server(chat_model_dir, "--api-key", "sekrit", "--reasoning-parser", "deepseek_r1",
               "--served-model-name", "phi-ish", log=tmp_path_factory.mktemp("logs") / "reasoning.log")
    yield s
    s.stop()
