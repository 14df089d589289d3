"""Writing and running each export format; TensorFlow, jax2onnx and onnxruntime are imported here
and only when a format needs them.

* ``saved_model``: jax2tf's native serialization (the only path left since the non-native,
  ``enable_xla=False`` lowering was removed, jax #15627): the model's StableHLO in one
  ``XlaCallModule`` op, lowered for CPU and CUDA, with the weights as TensorFlow variables.
* ``tflite``: ``tf.lite.TFLiteConverter.from_saved_model`` on that SavedModel; the converter
  legalises the StableHLO to TFLite builtins (measured with TensorFlow 2.21: every family tried
  converts without ``SELECT_TF_OPS``). ``float16`` stores the weights in half precision;
  ``int8`` is full-integer post-training quantisation calibrated on a representative set.
* ``onnx``: jax2onnx. Its Flax-level plugins rewrite ``flax.linen`` calls while tracing and fail
  on arguments this code base passes (positional windows, explicit pooling pads), so the model is
  first traced to a jaxpr and that jaxpr re-evaluated primitive by primitive, with nested calls
  inlined, which leaves jax2onnx only the ``lax`` primitives. Max pooling over NHWC is re-expressed
  over a ``[N*C, H, W]`` view: jax2onnx lowers a 4-d window to a 4-d ONNX ``MaxPool`` that
  onnxruntime refuses ("Unsupported pooling size").
"""

from __future__ import annotations

import pathlib
import tempfile
from collections.abc import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

FORMATS = ("saved_model", "tflite", "onnx")
EXTRA = 'the "export" extra (pip install -e ".[export]")'


def missing_converter(fmt: str) -> str | None:
    """The module a format needs that is not installed, or ``None``."""
    needed = {"saved_model": ("tensorflow",), "tflite": ("tensorflow",)}.get(
        fmt, ("jax2onnx", "onnxruntime")
    )
    import importlib.util

    for module in needed:
        if importlib.util.find_spec(module) is None:
            return module
    return None


# --- SavedModel and TFLite ------------------------------------------------------------------


def write_saved_model(
    fn: Callable, variables: dict, spec: jax.ShapeDtypeStruct, path: pathlib.Path
) -> None:
    """``fn(variables, images)`` as a SavedModel whose ``serving_default`` maps ``images`` to
    ``logits``."""
    import tensorflow as tf
    from jax.experimental import jax2tf

    converted = jax2tf.convert(
        fn, with_gradient=False, native_serialization_platforms=("cpu", "cuda")
    )
    module = tf.Module()
    module.variables_ = tf.nest.map_structure(
        lambda a: tf.Variable(np.asarray(a), trainable=False), variables
    )
    signature = tf.TensorSpec(spec.shape, tf.as_dtype(spec.dtype), name="images")

    @tf.function(autograph=False, input_signature=[signature])
    def serve(images):
        return {"logits": converted(module.variables_, images)}

    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def run_saved_model(path: pathlib.Path, batches: Iterable[np.ndarray]) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return np.concatenate([serve(images=tf.constant(b))["logits"].numpy() for b in batches])


def write_tflite(
    fn: Callable,
    variables: dict,
    spec: jax.ShapeDtypeStruct,
    path: pathlib.Path,
    *,
    float16: bool = False,
    representative: Sequence[np.ndarray] | None = None,
) -> None:
    """A TFLite flatbuffer converted from a temporary SavedModel.

    ``representative`` (batches of the model's input) switches on full-integer int8 quantisation:
    weights and activations int8, calibrated on those batches; the input and output stay
    float32 (or uint8 with the preprocessing inside) so callers need no scale or zero point.
    """
    import tensorflow as tf

    var_specs = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a), np.float32), variables)
    fn = rewritten(fn, var_specs, spec, rule=_tflite_rule)
    with tempfile.TemporaryDirectory() as tmp:
        write_saved_model(fn, variables, spec, pathlib.Path(tmp))
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        if representative is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([b] for b in representative)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        path.write_bytes(converter.convert())


def tflite_interpreter(path: pathlib.Path, *, threads: int | None = None):
    """LiteRT's interpreter when ``ai-edge-litert`` is installed, else TensorFlow's (deprecated
    in favour of LiteRT, still shipped with 2.21).

    A graph XNNPACK, the default CPU delegate, refuses to prepare runs on the builtin kernels
    instead, as on a device without the delegate (it refused ResNet-18's int8 graph while max
    pooling was padded with ``-inf``; see ``_tflite_rule``).
    """
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        import tensorflow as tf

        Interpreter = tf.lite.Interpreter
        OpResolverType = tf.lite.experimental.OpResolverType
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # TensorFlow's deprecation notice
        interpreter = Interpreter(model_path=str(path), num_threads=threads)
        try:
            interpreter.allocate_tensors()
        except RuntimeError:
            interpreter = Interpreter(
                model_path=str(path),
                num_threads=threads,
                experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
            )
            interpreter.allocate_tensors()
    return interpreter


def run_tflite(path: pathlib.Path, batches: Iterable[np.ndarray]) -> np.ndarray:
    interpreter = tflite_interpreter(path)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    logits = []
    for images in batches:
        interpreter.set_tensor(inp["index"], images)
        interpreter.invoke()
        logits.append(np.array(interpreter.get_tensor(out["index"]), np.float32))
    return np.concatenate(logits)


# --- ONNX -----------------------------------------------------------------------------------

_CALLS = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr"}
_CUSTOM = {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr"}


def _eval_inlined(jaxpr, consts: Sequence, args: Sequence, rule: Callable) -> list:
    """Evaluates ``jaxpr`` primitive by primitive, inlining nested calls and custom derivatives
    (an exported inference graph needs neither); ``rule(eqn, invals)`` may replace an equation's
    outputs (returns them as a list) or leave it alone (returns ``None``)."""
    env = {}

    def read(v):
        return v.val if isinstance(v, jax.extend.core.Literal) else env[v]

    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        invals = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        sub = _CALLS.get(name) or _CUSTOM.get(name)
        if sub and sub in eqn.params:
            closed = eqn.params[sub]
            inner = getattr(closed, "jaxpr", closed)
            inner_consts = getattr(closed, "consts", ())
            outs = _eval_inlined(inner, inner_consts, invals, rule)
        elif (replaced := rule(eqn, invals)) is not None:
            outs = replaced
        else:
            params = eqn.primitive.get_bind_params(eqn.params)
            out = eqn.primitive.bind(*invals, **params)
            outs = out if eqn.primitive.multiple_results else [out]
        for var, val in zip(eqn.outvars, outs):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def rewritten(fn: Callable, *specs: jax.ShapeDtypeStruct, rule: Callable) -> Callable:
    """``fn`` (one array out) re-expressed primitive by primitive with ``rule`` applied."""
    closed = jax.make_jaxpr(fn)(*specs)

    def run(*args):
        flat = jax.tree.leaves(args)
        return _eval_inlined(closed.jaxpr, closed.consts, flat, rule)[0]

    return run


def _onnx_rule(eqn, invals):
    if eqn.primitive.name == "reduce_window_max" and _is_nhwc_pool(eqn):
        return [_max_pool_nhwc(invals[0], eqn.params)]
    return None


def _tflite_rule(eqn, invals):
    """Padded max pooling as edge padding then unpadded pooling: the same maximum whenever every
    window overlaps the image (pad < window, true of every pooling here), and no ``-inf`` pad
    constant, which int8 quantisation cannot represent (the interpreter aborts on the
    ``PADV2(-inf)`` TensorFlow 2.21 otherwise writes for ResNet's stem)."""
    if eqn.primitive.name != "reduce_window_max":
        return None
    p = eqn.params
    pads = tuple(tuple(pair) for pair in p["padding"])
    if not any(lo or hi for lo, hi in pads) or any(
        max(pair) >= w for pair, w in zip(pads, p["window_dimensions"])
    ):
        return None
    if any(d != 1 for d in p["base_dilation"] + p["window_dilation"]):
        return None
    x = jnp.pad(invals[0], pads, mode="edge")
    return [
        jax.lax.reduce_window(
            x, -jnp.inf, jax.lax.max, p["window_dimensions"], p["window_strides"], "VALID"
        )
    ]


def _is_nhwc_pool(eqn) -> bool:
    p = eqn.params
    return (
        len(p["window_dimensions"]) == 4
        and p["window_dimensions"][0] == p["window_dimensions"][3] == 1
        and p["window_strides"][0] == p["window_strides"][3] == 1
        and tuple(p["padding"][0]) == tuple(p["padding"][3]) == (0, 0)
        and all(d == 1 for d in p["base_dilation"] + p["window_dilation"])
    )


def _max_pool_nhwc(x: jax.Array, params: dict) -> jax.Array:
    n, h, w, c = x.shape
    planes = jnp.transpose(x, (0, 3, 1, 2)).reshape(n * c, h, w)
    pooled = jax.lax.reduce_window(
        planes,
        -jnp.inf,
        jax.lax.max,
        (1, *params["window_dimensions"][1:3]),
        (1, *params["window_strides"][1:3]),
        ((0, 0), *params["padding"][1:3]),
    )
    return jnp.transpose(pooled.reshape(n, c, *pooled.shape[1:]), (0, 2, 3, 1))


def write_onnx(fn: Callable, spec: jax.ShapeDtypeStruct, path: pathlib.Path, *, name: str) -> None:
    """``fn(images)`` (weights closed over, stored as initialisers) as an ONNX model with input
    ``images`` and output ``logits``."""
    from jax2onnx import to_onnx

    proto = to_onnx(
        rewritten(fn, spec, rule=_onnx_rule),
        [spec],
        model_name=name,
        input_names=["images"],
        output_names=["logits"],
    )
    path.write_bytes(proto.SerializeToString())


def run_onnx(path: pathlib.Path, batches: Iterable[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3  # its shape-merging warnings are about jax2onnx's metadata
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["logits"], {"images": b})[0] for b in batches])
