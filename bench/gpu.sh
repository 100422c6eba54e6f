#!/usr/bin/env bash
# The GPU benchmark of issue 16 in one command, for a lent NVIDIA machine (H200).
#
# 1. Here, on the development machine (which reaches the package registry), once:
#
#        bash bench/gpu.sh prepare
#
#    puts what the device machine lacks into bench/.gpu-carry/ (git-ignored, ~1 MB):
#    the ml-collections wheel (train_step's config; the device image has everything
#    else: jax with the CUDA plugin, flax, optax, orbax, torch, torchvision, OpenCV,
#    Pillow) and the released IFCNN-MAX.pth (without it both sides use the same random
#    weights: the times are the same, the parity check too).
#
# 2. On the device machine, from the repository root, through the device tool:
#
#        run(command="bash bench/gpu.sh", carry=["bench/.gpu-carry"], timeout_s=600)
#
#    It checks the GPU and the packages (one clear line and exit 1 if something is
#    missing), then runs bench/run.py --device gpu: fuse_pair, fuse_batch, fuse_big
#    (one 2048x2048 pair) and train_step, JAX against every PyTorch variant on the same
#    GPU, plus the JAX accelerator attempts (HIGHEST precision = the library, XLA's
#    default precision = TF32, bf16, block sizes 512 / 2048), each with its error
#    against the float32 reference. Budget: about 6-8 minutes; the report is written
#    after every case, so a run cut short keeps the cases it finished.
#
#    Files under $OUT: gpu_bench.json (the full report), gpu_bench.md (its tables),
#    gpu_summary.json / gpu_summary.md (MP/s, images/s, ratios, errors), gpu_env.txt
#    (nvidia-smi, package versions), gpu_log.txt (everything printed).
#
# Settings (environment): GPU_BENCH_REPS (default 10), GPU_BENCH_CASES
# (default fuse_pair,fuse_batch,fuse_big,train_step), GPU_BENCH_TORCH_VARIANTS (the
# PyTorch variants, comma-separated; default: bench/torch_variants.py's GPU lists; e.g.
# default,default_fp32,channels_last_fp32 to skip the compiled ones on a second try),
# GPU_BENCH_TIMEOUT (seconds for bench/run.py, default 480), PYTHON (default python3).

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
CARRY=bench/.gpu-carry
PY=${PYTHON:-python3}

fail() {
    echo "bench/gpu.sh: error: $*" >&2
    if [ -n "${OUT:-}" ] && [ -d "${OUT}" ]; then
        printf '{"error": "%s"}\n' "$(echo "$*" | sed 's/"/\\"/g')" >"$OUT/gpu_error.json"
    fi
    exit 1
}

if [ "${1:-run}" = "prepare" ]; then
    mkdir -p "$CARRY/wheels" "$CARRY/ifcnn-release/snapshots"
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$CARRY/wheels" "ml-collections==1.1.0" ||
        fail "prepare: could not download the ml-collections wheel (no registry?)"
    release="${IFCNN_RELEASE_DIR:-../shared/ifcnn-release}"
    if [ -f "$release/snapshots/IFCNN-MAX.pth" ]; then
        cp "$release/snapshots/IFCNN-MAX.pth" "$CARRY/ifcnn-release/snapshots/"
    else
        echo "bench/gpu.sh: prepare: no $release/snapshots/IFCNN-MAX.pth; the device run uses random weights" >&2
    fi
    du -sh "$CARRY"
    echo "ready: run(command=\"bash bench/gpu.sh\", carry=[\"$CARRY\"], timeout_s=600)"
    exit 0
fi
[ "${1:-run}" = "run" ] || fail "usage: bash bench/gpu.sh [prepare|run]"

OUT=${OUT:-bench/.gpu-out}
mkdir -p "$OUT" || fail "cannot create $OUT"
exec > >(tee -a "$OUT/gpu_log.txt") 2>&1
echo "[gpu.sh] $(date -u +%FT%TZ) on $(hostname)"

command -v nvidia-smi >/dev/null 2>&1 || fail "no nvidia-smi: this machine has no NVIDIA driver (not a GPU machine?)"
nvidia-smi -L >/dev/null 2>&1 || fail "nvidia-smi sees no GPU"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
    nproc
    "$PY" --version
} >"$OUT/gpu_env.txt" 2>&1

# Wheels carried from the development machine, installed to a private folder.
if compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/ifcnn-gpu-site "$CARRY"/wheels/*.whl || fail "installing the carried wheels failed"
    export PYTHONPATH="/tmp/ifcnn-gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
if [ -f "$CARRY/ifcnn-release/snapshots/IFCNN-MAX.pth" ]; then
    export IFCNN_RELEASE_DIR="$PWD/$CARRY/ifcnn-release"
fi

missing=$("$PY" - <<'EOF'
import importlib.util
need = ["jax", "jaxlib", "flax", "optax", "orbax.checkpoint", "numpy", "cv2", "PIL", "tqdm", "torch", "torchvision"]
print(" ".join(m for m in need if importlib.util.find_spec(m) is None))
EOF
)
[ -z "$missing" ] || fail "python packages missing on this machine: $missing (carry them as wheels in bench/.gpu-carry: see bash bench/gpu.sh prepare)"
cases=${GPU_BENCH_CASES:-fuse_pair,fuse_batch,fuse_big,train_step}
if ! "$PY" -c "import ml_collections" 2>/dev/null; then
    echo "[gpu.sh] ml_collections missing (run 'bash bench/gpu.sh prepare' here and carry $CARRY): train_step skipped"
    cases=$(echo "$cases" | tr ',' '\n' | grep -v '^train_step$' | paste -sd, -)
fi

"$PY" - >>"$OUT/gpu_env.txt" 2>&1 <<'EOF' || fail "JAX or PyTorch does not see the GPU (see gpu_env.txt)"
import jax, torch
gpus = jax.devices("gpu")
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
print("jax", jax.__version__, gpus, "| torch", torch.__version__, torch.cuda.get_device_name(0))
EOF
tail -1 "$OUT/gpu_env.txt"
"$PY" -m pip list 2>/dev/null | grep -i -E '^(jax|jaxlib|jax-cuda|flax|optax|torch|torchvision|triton|numpy) ' >>"$OUT/gpu_env.txt"

# JAX must not take 75% of the GPU: PyTorch runs in the same process.
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
attempts=conv_f32_copy,conv_default_precision,conv_bf16,conv_block512,conv_block2048
variants=()
[ -n "${GPU_BENCH_TORCH_VARIANTS:-}" ] && variants=(--torch-variants "$GPU_BENCH_TORCH_VARIANTS")
timeout "${GPU_BENCH_TIMEOUT:-480}" "$PY" bench/run.py --device gpu --cases "$cases" \
    --reps "${GPU_BENCH_REPS:-10}" --jax-attempts "$attempts" "${variants[@]}" \
    --json "$OUT/gpu_bench.json" >"$OUT/gpu_bench.md"
status=$?
cat "$OUT/gpu_bench.md"
[ $status -eq 124 ] && echo "[gpu.sh] bench/run.py hit its time limit: the report holds the cases it finished"
if [ -f "$OUT/gpu_bench.json" ]; then
    "$PY" bench/gpu_summary.py "$OUT/gpu_bench.json" --json "$OUT/gpu_summary.json" >"$OUT/gpu_summary.md"
    cat "$OUT/gpu_summary.md"
else
    fail "bench/run.py wrote no report (exit $status; see gpu_log.txt)"
fi
echo "[gpu.sh] done, exit $status"
exit $status
