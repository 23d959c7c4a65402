"""Lowering rule families, one module per op family; importing this package registers them."""

import jax

# ONNX graphs are full of int64 (shapes, indices) and the corpus has float64 data: the backend runs
# with 64-bit types on, so int64/float64 values keep their declared precision.
jax.config.update("jax_enable_x64", True)

from . import elementwise  # noqa: E402,F401
from . import math_unary  # noqa: E402,F401
from . import conversion  # noqa: E402,F401
from . import reduction  # noqa: E402,F401
from . import linalg  # noqa: E402,F401
from . import shape  # noqa: E402,F401
from . import tensor_manipulation  # noqa: E402,F401
from . import activations  # noqa: E402,F401
from . import normalization  # noqa: E402,F401
from . import conv  # noqa: E402,F401
from . import pooling  # noqa: E402,F401
from . import fused  # noqa: E402,F401
from . import attention  # noqa: E402,F401
from . import losses  # noqa: E402,F401
from . import transformer  # noqa: E402,F401
from . import recurrent  # noqa: E402,F401
from . import im2col  # noqa: E402,F401
from . import control_flow  # noqa: E402,F401
from . import sequence  # noqa: E402,F401
from . import quantization  # noqa: E402,F401
from . import microsoft_fused  # noqa: E402,F401
from . import microsoft_attention  # noqa: E402,F401
from . import microsoft_quantized  # noqa: E402,F401
from . import resize  # noqa: E402,F401
from . import scatter_gather  # noqa: E402,F401
from . import signal  # noqa: E402,F401
from . import image  # noqa: E402,F401
from . import dynamic_shape  # noqa: E402,F401
from . import training  # noqa: E402,F401
from . import ml  # noqa: E402,F401
from . import random_ops  # noqa: E402,F401
from . import strings  # noqa: E402,F401
from .. import quant_exec  # noqa: E402,F401  (FakeQuantize, Int8Conv/Int8Gemm/Int8MatMul)
