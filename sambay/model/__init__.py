from sambay.model.model import CausalLM, CausalLMOutput

__all__ = ["CausalLM", "CausalLMOutput"]
