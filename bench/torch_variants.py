"""The PyTorch side of the benchmark in every configuration a PyTorch user could pick,
so that ``bench/run.py`` can take the fastest as its anchor.

Fusion variants (inference, the reference IFCNN of ``convert/torch_reference.py``):

  default            eager, ``torch.no_grad``, NCHW (what the README's first ratios used)
  inference_mode     eager under ``torch.inference_mode``
  channels_last      eager, inference_mode, model and inputs in channels_last
  jit_freeze         ``torch.jit.trace`` + ``torch.jit.freeze`` (BatchNorm folded)
  onednn_graph       the same with ``torch.jit.enable_onednn_fusion(True)`` (oneDNN graph)
  compile            ``torch.compile`` (inductor, C++ kernels), inference_mode
  compile_cl         the same, channels_last
  compile_freezing   ``torch.compile`` with inductor's ``freezing`` on, under no_grad: weights frozen,
                     BatchNorm folded, oneDNN-prepacked convolutions (Intel's advice
                     for CPU inference)

Training variants (``train_step``): default, channels_last, compile, compile_cl.

Each variant can also run under the allocator settings of ``python -m train.main``
(``train.process.keep_freed_memory``): those are process-wide, so they run in a worker
process (``python bench/torch_variants.py --worker ...``, one repetition per ``run NAME``
line), named ``<variant>+keep_freed``.

Every variant is checked first against the reference (``default``, float32):
fusion outputs, brought back to 0-1 (the ImageNet normalisation undone), must agree to
``PARITY_TOL``; training steps compare the fused output, the loss and the gradients of
the first step from the same initial state. A variant that fails to build or run is
reported with its error; one that runs is timed, but only those that agree can be the
anchor (the bf16 ones are there to compare with a bf16 JAX path).
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

PARITY_TOL = 1e-4  # max abs difference on 0-1 outputs
# Training: relative L2 error of each gradient tensor. The layers before the max fusion
# (conv2) differ by ~1e-3 between float32 variants of the same step (rounding moves
# near-ties of the max and BatchNorm's bias gradient is a sum with cancellation); those
# after it by ~1e-5.
GRAD_TOL = 1e-2
# The ImageNet normalisation of the model's inputs and outputs (ifcnn_jax.recipes).
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)

FUSION_VARIANTS = (
    "default",
    "inference_mode",
    "channels_last",
    "jit_freeze",
    "onednn_graph",
    "compile",
    "compile_cl",
    "compile_freezing",
)
TRAIN_VARIANTS = ("default", "channels_last", "compile", "compile_cl")
# What bench/run.py runs by default, per device. Precision suffixes: "_fp32" turns TF32
# off on CUDA (torch's default there is TF32 for cuDNN convolutions), "_bf16" runs under
# bf16 autocast (never the anchor: it does not agree with the reference to 1e-4).
DEFAULT_VARIANTS = {
    ("cpu", "fusion"): (*FUSION_VARIANTS, "channels_last_bf16"),
    ("cpu", "train"): TRAIN_VARIANTS,
    # GPU: fewer compiled variants (each compiles for a minute or so; the device time of
    # a session is short). The _fp32 twins of a compiled variant reuse its graph.
    ("gpu", "fusion"): (
        "default",
        "default_fp32",
        "channels_last",
        "channels_last_fp32",
        "channels_last_bf16",
        "compile_cl",
        "compile_cl_fp32",
    ),
    ("gpu", "train"): (
        "default",
        "default_fp32",
        "channels_last",
        "channels_last_fp32",
        "channels_last_bf16",
        "compile_cl",
    ),
}
KEEP_FREED = "+keep_freed"


def fusion_inputs(num_sources: int, batch: int, size: int, seed: int = 0) -> np.ndarray:
    """The fusion cases' sources, ``(N, B, H, W, 3)`` float32 (both sides use these)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(num_sources, batch, size, size, 3)).astype(np.float32)


def reference_model(release_dir: Path | None, device: str):
    """The reference MAX model with the released weights (random ones of the same shape
    when ``release_dir`` is None)."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    from convert.torch_reference import ReferenceIFCNN  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    model = ReferenceIFCNN("max")
    if release_dir is not None:
        pth = release_dir / "snapshots" / "IFCNN-MAX.pth"
        model.load_state_dict(torch.load(pth, map_location="cpu", weights_only=True))
    return model.eval().to(device)


def _sync(device: str) -> None:
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _raise_compile_limits() -> None:
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    # Several compiled variants and shapes share the reference's forward code object.
    for name in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, max(getattr(torch._dynamo.config, name), 64))


def _own_code_object(module, tag: str):
    """``module`` behind a wrapper whose forward is a code object of its own. Dynamo
    caches compiled graphs per code object, and the parameters of an inlined module are
    graph inputs: without this, a second ``torch.compile`` of a copy of the same module
    (other options, same shapes) silently reused the first one's graph."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    namespace: dict = {}
    exec(f"def forward_{tag}(self, *args):\n    return self.inner(*args)\n", namespace)  # noqa: S102 - a fresh code object per variant
    wrapper_type = type(f"Compiled_{tag}", (torch.nn.Module,), {"forward": namespace[f"forward_{tag}"]})
    wrapper = wrapper_type()
    wrapper.inner = module
    return wrapper


PRECISIONS = ("fp32", "bf16")


def split_precision(name: str) -> tuple[str, str | None]:
    """``"compile_cl_bf16"`` -> ``("compile_cl", "bf16")``; no suffix: torch's default
    (on CUDA, cuDNN convolutions in TF32)."""
    base, _, suffix = name.rpartition("_")
    return (base, suffix) if base and suffix in PRECISIONS else (name, None)


def with_precision(run: Callable[[], object], precision: str | None, device: str) -> Callable[[], object]:
    """``run`` under a precision setting: ``fp32`` turns TF32 off (cuDNN and cuBLAS) for
    the call, ``bf16`` runs it under ``torch.autocast(dtype=torch.bfloat16)``."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    if precision is None:
        return run
    if precision == "bf16":
        device_type = "cuda" if device.startswith("cuda") else "cpu"

        def run_bf16():
            with torch.autocast(device_type=device_type, dtype=torch.bfloat16):
                return run()

        return run_bf16

    def run_fp32():
        saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        try:
            return run()
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    return run_fp32


def build_fusion_variant(name: str, model, tensors: list, device: str) -> Callable[[], object]:
    """One repetition of fusion variant ``name`` (a base variant, optionally with a
    precision suffix ``_fp32`` / ``_bf16``): returns the NCHW output, synced."""
    base, precision = split_precision(name)
    if precision is None:
        return _build_fusion_base(base, name, model, tensors, device)

    def build():
        return _build_fusion_base(base, name, model, tensors, device)

    # Built (and compiled, for compile variants) under the precision it runs with.
    return with_precision(_lazy(with_precision(build, precision, device)), precision, device)


def _lazy(build: Callable[[], Callable[[], object]]) -> Callable[[], object]:
    """A runner that builds itself at its first call (so that the build happens under
    the caller's settings)."""
    holder: dict = {}

    def run():
        if "run" not in holder:
            holder["run"] = build()
        return holder["run"]()

    return run


def _build_fusion_base(name: str, tag: str, model, tensors: list, device: str) -> Callable[[], object]:
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    if name == "default":

        def run():
            with torch.no_grad():
                out = model(*tensors)
            _sync(device)
            return out

        return run
    channels_last = name in ("channels_last", "compile_cl")
    net = copy.deepcopy(model)  # .to(memory_format=...) and freezing change a module in place
    inputs = tensors
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
        inputs = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
    if name in ("inference_mode", "channels_last"):
        fn = net
    elif name in ("jit_freeze", "onednn_graph"):
        onednn = name == "onednn_graph"
        torch.jit.enable_onednn_fusion(onednn)
        try:
            with torch.no_grad():
                traced = torch.jit.freeze(torch.jit.trace(net, tuple(inputs)))
                for _ in range(3):  # the profiling executor optimises after a few runs
                    traced(*inputs)
        finally:
            torch.jit.enable_onednn_fusion(False)

        def run():
            torch.jit.enable_onednn_fusion(onednn)
            try:
                with torch.no_grad():
                    out = traced(*inputs)
            finally:
                torch.jit.enable_onednn_fusion(False)
            _sync(device)
            return out

        return run
    elif name in ("compile", "compile_cl", "compile_freezing"):
        _raise_compile_limits()
        fn = torch.compile(_own_code_object(net, tag), dynamic=False)
        if name == "compile_freezing":
            # Compiled here, at the first call: options={"freezing": True} was ignored
            # (checked in the generated code), the patched global config is not.
            with torch._inductor.config.patch(freezing=True), torch.no_grad():
                fn(*inputs)
    else:
        raise ValueError(f"unknown fusion variant {name!r}")

    # Inductor freezes only when gradients are off by no_grad (under inference_mode it
    # compiled without freezing: aten convolutions, BatchNorm not folded).
    context = torch.no_grad if name == "compile_freezing" else torch.inference_mode

    def run():
        with context():
            out = fn(*inputs)
        _sync(device)
        return out

    return run


def reference_output(model, sources: np.ndarray) -> np.ndarray:
    """The reference: the ``default`` variant on the CPU (float32, no TF32), NHWC."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    cpu_model = copy.deepcopy(model).cpu()
    tensors = [torch.from_numpy(np.ascontiguousarray(s)).permute(0, 3, 1, 2).contiguous() for s in sources]
    with torch.no_grad():
        return cpu_model(*tensors).permute(0, 2, 3, 1).numpy()


def unit_output(out) -> np.ndarray:
    """An NCHW output tensor as NHWC on the 0-1 scale's differences (times the std)."""
    return out.detach().permute(0, 2, 3, 1).float().cpu().numpy() * IMAGENET_STD


def fusion_variants(
    model, sources: np.ndarray, device: str, names, reference: np.ndarray | None = None
) -> tuple[dict, dict]:
    """Builds and checks the fusion variants ``names``. Returns ``(runs, info)``: the
    callables of those that agree with the reference, and per variant its parity or
    error. ``reference`` (NHWC, model scale) defaults to the ``default`` variant's."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    tensors = [
        torch.from_numpy(np.ascontiguousarray(s)).permute(0, 3, 1, 2).contiguous().to(device) for s in sources
    ]
    if reference is None:
        reference = reference_output(model, sources)
    ref_unit = reference * IMAGENET_STD
    runs, info = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            run = build_fusion_variant(name, model, tensors, device)
            out = run()  # compiles where the variant compiles
            diff = float(np.max(np.abs(unit_output(out) - ref_unit)))
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
            info[name] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
            continue
        info[name] = {
            "max_abs_diff_vs_reference": diff,
            "parity": diff <= PARITY_TOL,
            "build_s": time.perf_counter() - start,
        }
        runs[name] = run  # timed either way; only variants with parity can be the anchor
        if diff > PARITY_TOL:
            info[name]["error"] = f"max abs diff {diff:.1e} > {PARITY_TOL:g}: not eligible as anchor"
    return runs, info


# ---------------------------------------------------------------- training


def build_train_variant(name: str, device: str, batch: int = 8, size: int = 128, seed: int = 0):
    """The PyTorch training step of ``bench/cases.py`` in variant ``name``. Returns
    ``(run, first)``: one step (zero_grad, forward, backward, Adam, synced), and a
    function giving the first step's fused output, loss and gradients without stepping."""
    import torch  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)
    import torchvision  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    from convert.torch_reference import ReferenceIFCNN  # noqa: PLC0415 - lazy: torch is optional (the [torch] extra)

    base, precision = split_precision(name)
    if base not in TRAIN_VARIANTS:
        raise ValueError(f"unknown training variant {name!r}")
    channels_last = base in ("channels_last", "compile_cl")
    rng = np.random.default_rng(seed)
    sources = rng.normal(size=(2, batch, size, size, 3)).astype(np.float32)
    target = rng.normal(size=(batch, size, size, 3)).astype(np.float32)
    torch.manual_seed(seed)
    net = ReferenceIFCNN("max").train()
    net.conv1.weight.requires_grad_(False)  # frozen, as in the JAX config (and the paper)
    resnet = torchvision.models.resnet101(weights=None).eval()
    layer1 = torch.nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1)
    for p in layer1.parameters():
        p.requires_grad_(False)
    net, layer1 = net.to(device), layer1.to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if channels_last:
        net, layer1 = net.to(memory_format=fmt), layer1.to(memory_format=fmt)
    trained = [p for p in net.parameters() if p.requires_grad]
    adam = torch.optim.Adam(trained, lr=1e-4)

    def to_torch(a):
        t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).to(device)
        return t.contiguous(memory_format=fmt)

    sources_torch = [to_torch(s) for s in sources]
    target_torch = to_torch(target)
    mse = torch.nn.functional.mse_loss

    def loss_fn(a, b, tgt):
        fused = net(a, b)
        with torch.no_grad():
            target_features = layer1(tgt)
        return mse(fused, tgt) + mse(layer1(fused), target_features), fused

    if base.startswith("compile"):
        _raise_compile_limits()
        namespace: dict = {"inner": loss_fn}
        # A code object of its own per variant (see _own_code_object).
        exec(f"def loss_{name}(*args):\n    return inner(*args)\n", namespace)  # noqa: S102
        compiled = torch.compile(namespace[f"loss_{name}"], dynamic=False)

        def loss_fn(*args):
            # With inductor's layout optimisation (its default), the compiled backward
            # failed its own stride assertion (channels_last gradients where it expected
            # NCHW), in NCHW and channels_last alike.
            with torch._inductor.config.patch(layout_optimization=False):
                return compiled(*args)

    def first():
        adam.zero_grad(set_to_none=True)
        loss, fused = loss_fn(*sources_torch, target_torch)
        loss.backward()
        grads = [p.grad.detach().cpu().numpy().copy() for p in trained]
        adam.zero_grad(set_to_none=True)
        return unit_output(fused), float(loss), grads

    def run():
        adam.zero_grad(set_to_none=True)
        loss, _ = loss_fn(*sources_torch, target_torch)
        loss.backward()
        adam.step()
        _sync(device)
        return loss

    return with_precision(run, precision, device), with_precision(first, precision, device)


def train_variants(device: str, names, batch: int = 8, size: int = 128, seed: int = 0, reference=None):
    """Builds and checks the training variants ``names`` (see :func:`fusion_variants`);
    ``reference`` is the ``default`` variant's first step, computed here if None."""
    if reference is None:  # the default step on the CPU (float32, no TF32)
        reference = build_train_variant("default", "cpu", batch, size, seed)[1]()
    ref_fused, ref_loss, ref_grads = reference
    runs, info = {}, {}
    for name in names:
        start = time.perf_counter()
        try:
            run, first = build_train_variant(name, device, batch, size, seed)
            fused, loss, grads = first()  # compiles where the variant compiles
            run()
        except Exception as exc:  # noqa: BLE001 - a variant that cannot run is reported, not fatal
            info[name] = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}"}
            continue
        fused_diff = float(np.max(np.abs(fused - ref_fused)))
        loss_rel = abs(loss - ref_loss) / abs(ref_loss)
        # Per parameter tensor, the relative L2 error of its gradient (the largest over
        # the tensors), and the largest absolute error relative to the largest entry.
        grad_rel = max(float(np.linalg.norm(g - r) / np.linalg.norm(r)) for g, r in zip(grads, ref_grads))
        grad_max = max(float(np.max(np.abs(g - r)) / np.max(np.abs(r))) for g, r in zip(grads, ref_grads))
        ok = fused_diff <= PARITY_TOL and loss_rel <= PARITY_TOL and grad_rel <= GRAD_TOL
        info[name] = {
            "max_abs_diff_vs_reference": fused_diff,
            "loss_rel_diff": loss_rel,
            "grad_rel_l2_diff": grad_rel,
            "grad_max_abs_diff_rel": grad_max,
            "parity": ok,
            "build_s": time.perf_counter() - start,
        }
        runs[name] = run  # timed either way; only variants with parity can be the anchor
        if not ok:
            info[name]["error"] = (
                "differs from the reference (fused 1e-4, loss 1e-4, gradients 1e-2 relative L2): "
                "not eligible as anchor"
            )
    return runs, info


# ---------------------------------------------------------------- worker process


def timed(run: Callable[[], object]) -> dict:
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    run()
    return {"wall_s": time.perf_counter() - start_wall, "cpu_s": time.process_time() - start_cpu}


class VariantWorker:
    """Torch variants in a worker process with ``train.main``'s allocator settings; one
    callable per variant, each doing one repetition there and returning its clocks."""

    def __init__(self, case: str, variants, *, threads: int, device: str, release: Path | None, spec: dict):
        import subprocess  # noqa: PLC0415 - lazy: only the parent process starts workers

        command = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--worker",
            case,
            "--variants",
            ",".join(variants),
            "--threads",
            str(threads),
            "--device",
            device,
            "--spec",
            json.dumps(spec),
        ]
        if release is not None:
            command += ["--release", str(release)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._reply()

    def _reply(self) -> dict:
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"torch variant worker exited with {self.process.wait()}")
        return json.loads(line)

    def runner(self, name: str) -> Callable[[], dict]:
        def run():
            self.process.stdin.write(f"run {name}\n")
            self.process.stdin.flush()
            return self._reply()

        return run

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait()


def worker_main(args) -> int:
    from train.process import keep_freed_memory  # noqa: PLC0415 - lazy: the settings go first

    applied = keep_freed_memory()
    import torch  # noqa: PLC0415 - lazy: after the allocator settings

    torch.set_num_threads(args.threads)
    spec = json.loads(args.spec)
    names = [n for n in args.variants.split(",") if n]
    release = Path(args.release) if args.release else None
    if args.worker == "train_step":
        runs, info = train_variants(args.device, names, spec["batch"], spec["size"], spec.get("seed", 0))
    else:
        model = reference_model(release, args.device)
        sources = fusion_inputs(spec["num_sources"], spec["batch"], spec["size"], spec.get("seed", 0))
        runs, info = fusion_variants(model, sources, args.device, names)
    print(json.dumps({"keep_freed_memory": applied, "variants": info}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if len(words) != 2 or words[0] != "run" or words[1] not in runs:
            break
        print(json.dumps(timed(runs[words[1]])), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", choices=("fuse_pair", "fuse_batch", "train_step"), required=True)
    parser.add_argument("--variants", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--release")
    parser.add_argument("--spec", required=True, help="JSON: num_sources, batch, size, seed")
    return worker_main(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
