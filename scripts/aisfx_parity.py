"""Check ``detectors.embedders.aisfx`` against the original aiSFX code (not a dependency).

Two checks, printing the largest absolute differences as JSON:

1. network: the wheel's own ``aisfx/models/cnn2d.py`` (needs only torch) with the checkpoint,
   against our ``AisfxEmbedder`` on the same log-mel input;
2. front end (``--essentia-python``): the wheel's Essentia spectrogram function, run by a
   Python that has ``essentia`` installed (e.g. a throwaway venv: ``pip install essentia``),
   against our torch front end on the same 44.1 kHz audio.

    pip download aisfx==0.1.2 --no-deps -d /tmp/aisfx
    unzip -q -o /tmp/aisfx/*.whl -d /tmp/aisfx/x
    python scripts/aisfx_parity.py --wheel-dir /tmp/aisfx/x --essentia-python /tmp/ess/bin/python

The original loads its checkpoint with full unpickling (``weights_only=False``); do that only
with the wheel whose sha256 ``humwatch models fetch`` pins.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from detectors.embedders.aisfx import HOP_LENGTH, N_FFT, SAMPLE_RATE, SPEC_MAX, AisfxEmbedder

ESSENTIA_SNIPPET = """
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import spectrogram_essentia as se
spec = se.compute_spectrogram(filename=sys.argv[2], sr=44100.0, block_size=2048, hop_size=1024,
                              n_mels=96, f_min=0.0, f_max=22050.0)
np.save(sys.argv[3], np.asarray(spec))
"""


def test_audio(seconds: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    hum = sum(0.1 / h * np.sin(2 * np.pi * 120 * h * t) for h in range(1, 8))
    return (hum + 0.02 * rng.standard_normal(t.size)).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--wheel-dir", required=True, help="the unzipped aisfx wheel")
    parser.add_argument("--model-dir", default=None, help="humwatch's aisfx model directory")
    parser.add_argument("--essentia-python", default=None)
    parser.add_argument("--audio", default=None, help="a 44.1 kHz mono file (default: synthetic)")
    args = parser.parse_args()
    wheel = Path(args.wheel_dir)
    ours = AisfxEmbedder(model_dir=args.model_dir, device="cpu")
    wave = sf.read(args.audio, dtype="float32")[0] if args.audio else test_audio()
    report = {}

    spec = importlib.util.spec_from_file_location("cnn2d", wheel / "aisfx/models/cnn2d.py")
    cnn2d = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cnn2d)
    weights, datasets = torch.load(
        wheel / "aisfx/models/checkpoint.pth", map_location="cpu", weights_only=False
    )
    original = cnn2d.CrossNet(cnn2d.EmbeddingNet("max", 3, 1, 64), datasets, "cpu")
    original.load_state_dict(weights)
    original.eval()
    block = N_FFT + 99 * HOP_LENGTH  # the original's 100-frame blocks
    windows = np.stack([wave[s : s + block] for s in range(0, len(wave) - block + 1, SAMPLE_RATE)])
    with torch.no_grad():
        reference = original.get_embedding(torch.from_numpy(ours.log_mel(windows))).numpy()
    report["network_max_abs_diff"] = float(np.abs(ours.embed(windows) - reference).max())
    report["network_output_max"] = float(np.abs(reference).max())

    if args.essentia_python:
        with tempfile.TemporaryDirectory() as tmp:
            audio, out = Path(tmp) / "audio.wav", Path(tmp) / "mel.npy"
            sf.write(audio, wave, SAMPLE_RATE, subtype="FLOAT")
            subprocess.run(
                [
                    args.essentia_python,
                    "-c",
                    ESSENTIA_SNIPPET,
                    str(wheel / "aisfx/spectrogram"),
                    str(audio),
                    str(out),
                ],
                check=True,
                capture_output=True,
            )
            essentia = np.load(out) / SPEC_MAX
        mine = ours.log_mel(wave[None])[0]
        # Essentia centres its first frame on sample 0; ours start inside the audio.
        aligned = essentia[1 : 1 + len(mine)]
        report["front_end_frames"] = [len(mine), len(essentia)]
        report["front_end_max_abs_diff"] = float(np.abs(aligned - mine).max())
        report["front_end_value_max"] = float(aligned.max())
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
