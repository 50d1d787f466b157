from .reference import causal_conv1d, causal_conv1d_update  # replaced below once triton.py exists
