"""Throughput of the hf embedder on CUDA (bfloat16, float32, float32+TF32) and on CPU.

Prints one JSON document: windows per second for every model, window length and
device/dtype, side by side with the CPU float32 run and with the default logmel embedder as
the reference, the share of time the CPU feature extractors need on their own, and how far
bfloat16 vectors move from float32 ones (cosine similarity). On CUDA, AST's fbank runs on the
GPU (``features_on``); the other feature extractors always run on the CPU.

Without ``--model`` it builds random-weight models from configs, so nothing is downloaded:
AST base (``ASTConfig()``, 1 s and 10 s windows at 16 kHz) and wav2vec2 base
(``Wav2Vec2Config()``, 1 s windows at 16 kHz); ``--families`` adds ``clap`` (HTSAT audio
tower, 48 kHz). Throughput does not depend on the weights. ``--model DIR`` (repeatable)
measures saved models instead.

Runs on a CPU-only machine too: the CUDA measurements are then skipped and the JSON says so.
Default run: about 2 minutes on one GPU (``--budget-s`` bounds it). ``--quick`` uses tiny
models and short timings (a smoke test that takes seconds).

    .venv/bin/python benchmarks/embedders_gpu.py > embedders_gpu.json
    .venv/bin/python benchmarks/embedders_gpu.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from detectors.embedders import build_embedder  # noqa: E402


def log(message: str) -> None:
    print(f"[embedders_gpu] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- models from configs


def _save_random(model: torch.nn.Module, fe: Any, path: Path) -> dict[str, Any]:
    model.eval()
    model.save_pretrained(path)
    fe.save_pretrained(path)
    return {"parameters": sum(p.numel() for p in model.parameters())}


def build_random_model(family: str, quick: bool, root: Path) -> tuple[Path, dict[str, Any]]:
    """Random-weight model of ``family`` saved under ``root``; base size unless ``quick``."""
    import transformers

    torch.manual_seed(0)
    path = root / family
    if family == "ast":
        if quick:
            config = transformers.ASTConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                max_length=1024,
                num_mel_bins=128,
            )
            source = "random weights, tiny ASTConfig (64 hidden, 2 layers)"
        else:
            config = transformers.ASTConfig()
            source = "random weights, ASTConfig() = AST base (768 hidden, 12 layers, 1024 frames)"
        fe = transformers.ASTFeatureExtractor(
            num_mel_bins=config.num_mel_bins, max_length=config.max_length
        )
        info = _save_random(transformers.ASTModel(config), fe, path)
    elif family == "wav2vec2":
        if quick:
            config = transformers.Wav2Vec2Config(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=128,
                conv_dim=(64,) * 7,
            )
            source = "random weights, tiny Wav2Vec2Config (64 hidden, 2 layers)"
        else:
            config = transformers.Wav2Vec2Config()
            source = "random weights, Wav2Vec2Config() = wav2vec2 base (768 hidden, 12 layers)"
        fe = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
        info = _save_random(transformers.Wav2Vec2Model(config), fe, path)
    elif family == "clap":
        if quick:
            config = transformers.ClapAudioConfig(
                patch_embeds_hidden_size=32,
                hidden_size=256,
                depths=[1, 1, 1, 1],
                num_attention_heads=[1, 2, 4, 8],
                projection_dim=64,
            )
            source = "random weights, tiny ClapAudioConfig (32 -> 256 channels, 4 stages)"
        else:
            config = transformers.ClapAudioConfig()
            source = "random weights, ClapAudioConfig() = CLAP HTSAT audio tower (unfused)"
        fe = transformers.ClapFeatureExtractor(truncation="rand_trunc")
        info = _save_random(transformers.ClapAudioModelWithProjection(config), fe, path)
    else:
        raise SystemExit(f"unknown family {family!r}; use ast, wav2vec2, clap")
    info["source"] = source
    return path, info


# ---------------------------------------------------------------- measurement


def machine_windows(n: int, samples: int, rate: int, seed: int = 0) -> np.ndarray:
    """Hum + harmonics + noise, different per window: what a machine microphone hears."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples, dtype=np.float32) / rate
    out = np.empty((n, samples), dtype=np.float32)
    for i in range(n):
        f0 = rng.uniform(40, 400)
        hum = sum(np.sin(2 * np.pi * f0 * k * t + rng.uniform(0, 6.3)) / k for k in range(1, 5))
        out[i] = 0.1 * hum + 0.02 * rng.standard_normal(samples)
    return out


def measure(embed, windows: np.ndarray, min_seconds: float, max_calls: int) -> dict[str, Any]:
    """Warm up once, then call ``embed(windows)`` until ``min_seconds`` have passed."""
    embed(windows)
    calls = 0
    start = time.perf_counter()
    while True:
        embed(windows)
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds or calls >= max_calls:
            break
    n = calls * len(windows)
    return {
        "windows": n,
        "seconds": round(elapsed, 4),
        "windows_per_s": round(n / elapsed, 2),
        "ms_per_window": round(1000 * elapsed / n, 3),
    }


@contextlib.contextmanager
def tf32(enabled: bool):
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def feature_extractor_only(embedder: Any):
    """``windows -> features``: the CPU half of ``embedder.embed``, on its own."""
    fe, rate = embedder._fe, embedder.sample_rate  # the model's own feature extractor

    def extract(windows: np.ndarray) -> Any:
        return fe(list(windows), sampling_rate=rate, return_tensors="pt")

    return extract


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)


def free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def environment() -> dict[str, Any]:
    import transformers

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env.update(
            cuda_device=torch.cuda.get_device_name(0),
            cuda_capability=f"{props.major}.{props.minor}",
            cuda_memory_gib=round(props.total_memory / 2**30, 1),
            cuda_device_count=torch.cuda.device_count(),
            bf16_supported=torch.cuda.is_bf16_supported(),
        )
    return env


# ---------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="DIR",
        help="saved model directory to measure (repeatable); default: random-weight models",
    )
    parser.add_argument(
        "--families",
        default="ast,wav2vec2",
        help="random-weight models to build when no --model is given: ast, wav2vec2, clap",
    )
    parser.add_argument(
        "--window-s",
        default=None,
        help="comma-separated window lengths in seconds (default: AST/CLAP 1,10; wav2vec2 1)",
    )
    parser.add_argument("--gpu-batch-size", type=int, default=32)
    parser.add_argument("--cpu-batch-size", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=4.0, help="per CUDA measurement")
    parser.add_argument("--cpu-min-seconds", type=float, default=6.0, help="per CPU measurement")
    parser.add_argument("--budget-s", type=float, default=150.0, help="skip what would pass this")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU hf measurements")
    parser.add_argument("--no-tf32", action="store_true", help="skip the float32+TF32 run")
    parser.add_argument(
        "--quick", action="store_true", help="tiny models, short timings (smoke test)"
    )
    parser.add_argument("--out", default=None, help="also write the JSON to this file")
    args = parser.parse_args(argv)
    if args.quick:
        args.min_seconds = min(args.min_seconds, 0.5)
        args.cpu_min_seconds = min(args.cpu_min_seconds, 0.5)
        args.gpu_batch_size = min(args.gpu_batch_size, 8)
        args.cpu_batch_size = min(args.cpu_batch_size, 4)
    return args


def window_lengths(args: argparse.Namespace, family: str) -> list[float]:
    if args.window_s:
        return [float(s) for s in args.window_s.split(",") if s.strip()]
    return [1.0, 10.0] if family in ("ast", "clap") else [1.0]


def bench_model(
    name: str,
    directory: str,
    args: argparse.Namespace,
    configs: list[tuple[str, str, str, bool]],
    report: dict[str, Any],
    over_budget,
) -> None:
    """Measure one saved model at every window length and config; append to ``report``."""
    try:
        probe = build_embedder(
            {"name": "hf", "model": directory, "device": "cpu", "dtype": "float32"}
        )
    except Exception as exc:  # a bad --model dir must not stop the others
        report["errors"].append({"model": name, "stage": "load", "error": repr(exc)})
        return
    report["models"].setdefault(name, {}).update(
        directory=directory,
        model_type=probe.model_type,
        dim=probe.dim,
        spec=probe.spec,
        sample_rate=probe.sample_rate,
    )
    for seconds in window_lengths(args, probe.family):
        samples = int(round(seconds * probe.sample_rate))
        if probe.max_samples is not None and samples > probe.max_samples:
            limit = probe.max_samples / probe.sample_rate
            report["skipped"].append(
                f"{name} @ {seconds:g} s: longer than the model's {limit:.2f} s input"
            )
            continue
        if over_budget(f"{name} @ {seconds:g} s"):
            continue
        key = f"{name}@{seconds:g}s"
        n_pool = max(args.gpu_batch_size, args.cpu_batch_size) * 2
        windows = machine_windows(n_pool, samples, probe.sample_rate)
        log(f"{key}: feature extractor alone")
        fe_windows = windows[: args.cpu_batch_size]
        fe = measure(
            feature_extractor_only(probe),
            fe_windows,
            args.cpu_min_seconds / 4,
            max_calls=1000,
        )
        report["feature_extraction"].append(
            {"model": name, "window_s": seconds, "device": "cpu", **fe}
        )
        logmel_rate = 16000
        logmel = build_embedder({"name": "logmel", "sample_rate": logmel_rate})
        ref_windows = machine_windows(
            args.cpu_batch_size * 4, int(seconds * logmel_rate), logmel_rate
        )
        ref = measure(logmel.embed, ref_windows, args.cpu_min_seconds / 4, max_calls=1000)
        report["reference"].append(
            {"embedder": "logmel", "window_s": seconds, "device": "cpu", **ref}
        )

        outputs: dict[str, np.ndarray] = {}
        agreement_windows = windows[:8]
        for label, device, dtype, use_tf32 in configs:
            if over_budget(f"{key} {label}"):
                continue
            batch = args.gpu_batch_size if device == "cuda" else args.cpu_batch_size
            pool = windows if device == "cuda" else windows[: args.cpu_batch_size]
            log(f"{key}: {label}, batch {batch}")
            emb = None
            try:
                with tf32(use_tf32) if device == "cuda" else contextlib.nullcontext():
                    emb = build_embedder(
                        {
                            "name": "hf",
                            "model": directory,
                            "device": device,
                            "dtype": dtype,
                            "batch_size": batch,
                        }
                    )
                    if device == "cuda":
                        torch.cuda.reset_peak_memory_stats()
                    min_s = args.min_seconds if device == "cuda" else args.cpu_min_seconds
                    row = measure(emb.embed, pool, min_s, max_calls=10_000)
                    on_device = getattr(emb, "_fbank_on_device", False)
                    row["features_on"] = "cuda" if on_device else "cpu"
                    if device == "cuda":
                        peak = torch.cuda.max_memory_allocated() / 2**20
                        row["peak_memory_mib"] = round(peak, 1)
                    outputs[label] = emb.embed(agreement_windows)
                report["results"].append(
                    {
                        "model": name,
                        "window_s": seconds,
                        "config": label,
                        "device": device,
                        "dtype": dtype + ("+tf32" if use_tf32 else ""),
                        "batch_size": batch,
                        **row,
                    }
                )
            except Exception as exc:  # e.g. out of memory: record it, go on
                report["errors"].append(
                    {
                        "model": name,
                        "window_s": seconds,
                        "config": label,
                        "error": repr(exc),
                        "traceback": traceback.format_exc(limit=3),
                    }
                )
            finally:
                del emb
                free_memory()

        agreement: dict[str, Any] = {"model": name, "window_s": seconds}
        base = outputs.get("cuda-float32", outputs.get("cpu-float32"))
        for label, vectors in outputs.items():
            if base is not None and vectors is not base:
                cos = cosine_rows(vectors, base)
                agreement[f"{label}_vs_float32_cosine_min"] = round(float(cos.min()), 6)
        if len(agreement) > 2:
            report["agreement"].append(agreement)

        rates = {
            r["config"]: r["windows_per_s"]
            for r in report["results"]
            if r["model"] == name and r["window_s"] == seconds
        }
        summary: dict[str, Any] = dict(rates)
        summary["feature_extractor_only_cpu"] = fe["windows_per_s"]
        summary["logmel_cpu_reference"] = ref["windows_per_s"]
        if "cpu-float32" in rates:
            for label, rate in rates.items():
                if label != "cpu-float32":
                    summary[f"{label}_speedup_vs_cpu"] = round(rate / rates["cpu-float32"], 2)
        if "cuda-bfloat16" in rates and "cuda-float32" in rates:
            summary["bfloat16_speedup_vs_float32"] = round(
                rates["cuda-bfloat16"] / rates["cuda-float32"], 2
            )
        report["summary"][key] = summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    cuda = torch.cuda.is_available()
    report: dict[str, Any] = {
        "benchmark": "embedders_gpu",
        "unit": "windows_per_s (end to end: feature extractor on CPU + model + pooling)",
        "environment": environment(),
        "settings": {
            k: v for k, v in vars(args).items() if k not in ("out",) and not k.startswith("_")
        },
        "models": {},
        "results": [],
        "feature_extraction": [],
        "reference": [],
        "agreement": [],
        "summary": {},
        "skipped": [],
        "errors": [],
        "notes": [
            "results: repeated embed() calls on the same pool of windows after one warm-up call",
            "feature_extraction: the model's own feature extractor alone, on the CPU",
            "reference: the default logmel embedder (CPU) on windows of the same length",
        ],
    }
    if not args.model:
        report["notes"].append(
            "random weights: throughput is representative of trained models of the same size; "
            "the bfloat16 agreement figures are only indicative"
        )
    if not cuda:
        report["skipped"].append("cuda: torch.cuda.is_available() is False; CPU results only")
    elif not torch.cuda.is_bf16_supported():
        report["skipped"].append("cuda bfloat16: not supported by this GPU")

    def over_budget(what: str) -> bool:
        if time.perf_counter() - started > args.budget_s:
            report["skipped"].append(f"{what}: over --budget-s {args.budget_s}")
            return True
        return False

    configs: list[tuple[str, str, str, bool]] = []  # label, device, dtype, tf32
    if cuda:
        if torch.cuda.is_bf16_supported():
            configs.append(("cuda-bfloat16", "cuda", "bfloat16", False))
        configs.append(("cuda-float32", "cuda", "float32", False))
        if not args.no_tf32:
            configs.append(("cuda-float32-tf32", "cuda", "float32", True))
    if not args.no_cpu:
        configs.append(("cpu-float32", "cpu", "float32", False))

    with tempfile.TemporaryDirectory(prefix="humwatch-bench-") as tmp:
        sources: list[tuple[str, str]] = []
        if args.model:
            for directory in args.model:
                sources.append((Path(directory).name or directory, directory))
        else:
            for family in [f.strip() for f in args.families.split(",") if f.strip()]:
                log(f"building random-weight {family} model")
                t0 = time.perf_counter()
                path, info = build_random_model(family, args.quick, Path(tmp))
                info["build_seconds"] = round(time.perf_counter() - t0, 2)
                name = f"{family}-{'tiny' if args.quick else 'base'}"
                report["models"][name] = info
                sources.append((name, str(path)))

        for name, directory in sources:
            bench_model(name, directory, args, configs, report, over_budget)

    report["total_seconds"] = round(time.perf_counter() - started, 1)
    return report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 1 if report["errors"] and not report["results"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
