"""The functional API (``import minidistill.nn.functional as F``): every differentiable op."""

from ..core.functions import (  # noqa: F401
    add, cast, concat, cross_entropy, div, dropout, embedding, exp, gelu, getitem, kl_div,
    kron_weight, layer_norm, linear, log, log_softmax, matmul, max, mean, mse_loss, mul, neg, permute,
    phm_linear, pow,
    relu, reshape, sigmoid, softmax, sqrt, sub, sum, tanh, transpose, zeros,
)
