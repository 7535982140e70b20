"""Pretrained transformers audio models as window embedders.

``HFEmbedder`` loads a model and its own feature extractor from a local directory (written by
``save_pretrained``) or a Hugging Face hub id, runs windows through it in batches (on CUDA in
bfloat16 when available) and pools one hidden state over time into one vector per window.

Supported families, detected from the config's ``model_type``:

- ``audio-spectrogram-transformer`` (AST): ``ASTModel`` + ``ASTFeatureExtractor`` (Kaldi fbank,
  16 kHz, padded to the model's fixed ``max_length`` frames). A checkpoint saved as
  ``ASTForAudioClassification`` loads too; the classifier head is dropped.
- ``clap`` / ``clap_audio_model`` (CLAP, HTSAT audio tower): ``ClapAudioModelWithProjection`` +
  ``ClapFeatureExtractor`` (48 kHz). A full ``ClapModel`` checkpoint loads without its text tower.
- ``wav2vec2``, ``wav2vec2-conformer``, ``hubert``, ``wavlm``, ``data2vec-audio``, ``unispeech``,
  ``unispeech-sat``: ``AutoModel`` + ``Wav2Vec2FeatureExtractor`` (16 kHz raw waveform).

Layers
------
``layer`` picks the hidden state that is pooled, with ``L`` the number of transformer blocks:
``0`` is the input to the first block, ``i`` the output of block ``i``, and ``L`` (or ``-1``)
the model's final output (``last_hidden_state``, after any final layer norm). Negative values
count from the end (``-2`` is block ``L - 1``). Intermediate layers are often better than the
last one for anomaly detection: they keep more of the acoustic detail that pretraining
objectives abstract away. CLAP takes ``layer=-1`` only.

Pooling
-------
- ``mean``, ``max``: per channel over the time (AST: patch; CLAP: time-frequency) tokens;
- ``mean+std``: mean and standard deviation concatenated (``dim`` doubles);
- ``cls`` (AST only): the average of AST's two leading [CLS]/distillation tokens, as its
  classifier uses them;
- ``projection`` (CLAP only, its default): the audio embedding of CLAP's joint audio-text space
  (``dim`` = ``projection_dim``), not L2-normalised (the cosine metric does that).

AST pads every window to its fixed input length (1024 frames = 10.24 s for AudioSet models);
``mean``/``max``/``mean+std`` pool only the patches that start inside the real audio, so a short
window is not diluted by patches of padding. AST and CLAP refuse windows longer than their
input length rather than truncate them silently (CLAP would crop at random). On CUDA, AST's
Kaldi fbank runs on the GPU (same computation as its feature extractor, which loops over the
windows on the CPU and would otherwise bound the throughput).

Downloads
---------
``local_files_only=False`` (the default) lets transformers fetch a hub id into its cache, as
``from_pretrained`` does; it also honours ``HF_HUB_OFFLINE=1``. Pass ``local_files_only=True``
to use only local directories and the cache. Local directories never need the network.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from detectors.errors import EmbedderError

AST_TYPES = ("audio-spectrogram-transformer",)
CLAP_TYPES = ("clap", "clap_audio_model")
WAV2VEC2_TYPES = (
    "wav2vec2",
    "wav2vec2-conformer",
    "hubert",
    "wavlm",
    "data2vec-audio",
    "unispeech",
    "unispeech-sat",
)
SUPPORTED_MODEL_TYPES = AST_TYPES + CLAP_TYPES + WAV2VEC2_TYPES

_POOLINGS = {
    "ast": ("mean", "max", "mean+std", "cls"),
    "clap": ("projection", "mean", "max", "mean+std"),
    "wav2vec2": ("mean", "max", "mean+std"),
}
_DEFAULT_POOLING = {"ast": "mean", "clap": "projection", "wav2vec2": "mean"}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _family(model_type: str | None) -> str | None:
    if model_type in AST_TYPES:
        return "ast"
    if model_type in CLAP_TYPES:
        return "clap"
    if model_type in WAV2VEC2_TYPES:
        return "wav2vec2"
    return None


def _looks_like_path(model: str) -> bool:
    """True when ``model`` can only be a filesystem path (hub ids are ``name`` or ``org/name``)."""
    return (
        model.startswith(("/", ".", "~"))
        or "\\" in model
        or model.count("/") > 1
        or os.path.isabs(model)
    )


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars while loading.

    The reports list keys a checkpoint has beyond the audio model (CLAP's text tower, AST's
    classifier), which are expected here; missing keys are checked by the embedder itself.
    """
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _has_kaldi_fbank() -> bool:
    try:
        import torchaudio.compliance.kaldi  # noqa: F401
    except ImportError:  # the feature extractor then uses its numpy approximation
        return False
    return True


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise EmbedderError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise EmbedderError(f"device {device!r} asked for, but CUDA is not available; use 'auto'")
    return resolved


def _resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    if dtype not in _DTYPES:
        raise EmbedderError(f"unknown dtype {dtype!r}; use 'auto', {', '.join(map(repr, _DTYPES))}")
    return _DTYPES[dtype]


class HFEmbedder:
    """Pooled hidden states of a pretrained transformers audio model.

    Parameters
    ----------
    model : str
        Local directory holding ``config.json``, the weights and ``preprocessor_config.json``
        (as written by ``save_pretrained``), or a hub id such as
        ``"MIT/ast-finetuned-audioset-10-10-0.4593"``.
    pooling : str or None
        ``"mean"``, ``"max"``, ``"mean+std"``, ``"cls"`` (AST) or ``"projection"`` (CLAP); None
        picks the family's default (``"projection"`` for CLAP, ``"mean"`` otherwise).
    layer : int
        Hidden state to pool (see the module docstring); -1 is the final output.
    dtype : str
        ``"auto"`` (bfloat16 on a CUDA device that supports it, else float32), ``"float32"``,
        ``"bfloat16"`` or ``"float16"``. Pooling always runs in float32.
    revision : str or None
        Hub revision (branch, tag or commit) to pin a hub id to; ignored for local directories.
    batch_size : int
        Windows per forward pass (bounds memory; does not change the vectors).
    device : str
        ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    local_files_only : bool
        Never download: use local directories and the transformers cache only.

    Attributes
    ----------
    sample_rate : int
        Rate of the feature extractor; windows must already have it.
    dim : int
        Length of each vector.
    family : str
        ``"ast"``, ``"clap"`` or ``"wav2vec2"``.
    model_type : str
        The config's ``model_type``.
    num_layers : int
        Number of transformer blocks ``L`` (CLAP: number of Swin stages).
    min_samples, max_samples : int, int or None
        Shortest and longest window the model takes (None: no upper bound).
    """

    name = "hf"
    metric = "cosine"

    def __init__(
        self,
        model: str,
        pooling: str | None = None,
        layer: int = -1,
        dtype: str = "auto",
        revision: str | None = None,
        batch_size: int = 16,
        device: str = "auto",
        local_files_only: bool = False,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise EmbedderError("model must be a local directory or a hub id, as a string")
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise EmbedderError(f"layer must be an integer, not {layer!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise EmbedderError(f"batch_size must be a positive integer, not {batch_size!r}")
        self.model = model
        self.layer = layer
        self.dtype = dtype
        self.revision = revision
        self.batch_size = batch_size
        self.local_files_only = bool(local_files_only)
        self.device = _resolve_device(device)
        self.torch_dtype = _resolve_dtype(dtype, self.device)

        source, config = self._load_config()
        self.model_type: str = config.model_type
        family = _family(self.model_type)
        if family is None:
            raise EmbedderError(
                f"model {model!r} has model_type {self.model_type!r}, which the hf embedder does "
                f"not support; use one of {', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        self.family = family
        if pooling is None:
            pooling = _DEFAULT_POOLING[family]
        if pooling not in _POOLINGS[family]:
            raise EmbedderError(
                f"pooling {pooling!r} does not apply to {self.model_type} models; "
                f"use one of {', '.join(_POOLINGS[family])}"
            )
        self.pooling = pooling

        if family == "clap":
            audio_config = config.audio_config if self.model_type == "clap" else config
            self.num_layers = len(audio_config.depths)
            if layer != -1:
                raise EmbedderError(
                    "CLAP models are embedded from their final output only; use layer=-1"
                )
            self._layer_index = self.num_layers
            channels = int(audio_config.patch_embeds_hidden_size * 2 ** (self.num_layers - 1))
            self.dim = int(audio_config.projection_dim) if pooling == "projection" else channels
        else:
            self.num_layers = int(config.num_hidden_layers)
            if not -(self.num_layers + 1) <= layer <= self.num_layers:
                raise EmbedderError(
                    f"layer {layer} is out of range for a model with {self.num_layers} layers; "
                    f"use -1 (final output) or 0..{self.num_layers}"
                )
            self._layer_index = layer % (self.num_layers + 1)
            self.dim = int(config.hidden_size)
        if pooling == "mean+std":
            self.dim *= 2

        self._model, self._fe = self._load_model(source, config)
        self._source, self._config = source, config
        self._text: tuple[Any, Any] | None = None  # CLAP text tower and tokenizer, on demand
        self.sample_rate = int(self._fe.sampling_rate)
        self._check_feature_extractor(config)

    # ------------------------------------------------------------------ loading

    def _hub_kwargs(self) -> dict[str, Any]:
        return {"revision": self.revision, "local_files_only": self.local_files_only}

    def _load_config(self) -> tuple[str, Any]:
        from transformers import AutoConfig

        source = os.path.expanduser(self.model)
        if os.path.isdir(source):
            if not os.path.isfile(os.path.join(source, "config.json")):
                raise EmbedderError(
                    f"model directory {self.model!r} has no config.json; save the model there "
                    "with model.save_pretrained(dir) and its feature extractor with "
                    "feature_extractor.save_pretrained(dir)"
                )
        elif _looks_like_path(self.model):
            raise EmbedderError(
                f"model directory {self.model!r} does not exist; pass a directory written by "
                "save_pretrained (config.json, weights, preprocessor_config.json) or a hub id "
                "such as 'MIT/ast-finetuned-audioset-10-10-0.4593'"
            )
        try:
            with _quiet_transformers():
                config = AutoConfig.from_pretrained(source, **self._hub_kwargs())
        except Exception as exc:  # OSError, ValueError, hub errors: all mean "cannot use it"
            if os.path.isdir(source):
                raise EmbedderError(
                    f"cannot read the config.json of model directory {self.model!r} ({exc})"
                ) from exc
            if self.local_files_only:
                hint = (
                    "it is neither a local directory nor in the local cache "
                    "(local_files_only=True forbids downloading it)"
                )
            else:
                hint = "it is neither a local model directory nor a downloadable hub id"
            raise EmbedderError(f"cannot load model {self.model!r}: {hint} ({exc})") from exc
        return source, config

    def _load_model(self, source: str, config: Any) -> tuple[torch.nn.Module, Any]:
        import transformers

        kwargs = self._hub_kwargs()
        if self.family == "ast":
            model_cls: Any = transformers.ASTModel
            fe_cls: Any = transformers.ASTFeatureExtractor
        elif self.family == "clap":
            model_cls = transformers.ClapAudioModelWithProjection
            fe_cls = transformers.ClapFeatureExtractor
            # A full ClapModel checkpoint keeps the audio tower under the same key prefixes
            # (audio_model., audio_projection.); its text tower is left unloaded.
            kwargs["config"] = config.audio_config if self.model_type == "clap" else config
        else:
            model_cls = transformers.AutoModel
            fe_cls = transformers.Wav2Vec2FeatureExtractor
        try:
            with _quiet_transformers():
                model, info = model_cls.from_pretrained(source, output_loading_info=True, **kwargs)
        except Exception as exc:
            raise EmbedderError(f"cannot load the weights of model {self.model!r}: {exc}") from exc
        missing = [key for key in info.get("missing_keys", ()) if not self._ignorable_missing(key)]
        if missing:
            shown = ", ".join(sorted(missing)[:5])
            raise EmbedderError(
                f"model {self.model!r} lacks {len(missing)} weights of its "
                f"{type(model).__name__} (e.g. {shown}); the checkpoint does not match its "
                "config, and its vectors would come from random weights"
            )
        try:
            with _quiet_transformers():
                fe = fe_cls.from_pretrained(source, **self._hub_kwargs())
        except Exception as exc:
            raise EmbedderError(
                f"cannot load the feature extractor of model {self.model!r} ({exc}); save it "
                "next to the model with feature_extractor.save_pretrained(dir) "
                "(preprocessor_config.json)"
            ) from exc
        model.eval()
        model.to(device=self.device, dtype=self.torch_dtype)
        return model, fe

    def _ignorable_missing(self, key: str) -> bool:
        # wav2vec2's masked_spec_embed only serves masking during pretraining.
        if key.endswith("masked_spec_embed"):
            return True
        return self.family == "clap" and self.pooling != "projection" and "projection" in key

    def _check_feature_extractor(self, config: Any) -> None:
        fe = self._fe
        self._fbank_on_device = False
        if self.family == "ast":
            if fe.max_length != config.max_length or fe.num_mel_bins != config.num_mel_bins:
                raise EmbedderError(
                    f"feature extractor of {self.model!r} makes {fe.max_length} frames x "
                    f"{fe.num_mel_bins} mel bins but the model takes {config.max_length} x "
                    f"{config.num_mel_bins}; save the matching ASTFeatureExtractor"
                )
            # torchaudio.compliance.kaldi.fbank defaults: 25 ms frames every 10 ms, snip_edges.
            self._frame_length = int(self.sample_rate * 0.025)
            self._frame_shift = int(self.sample_rate * 0.010)
            self.min_samples: int = self._frame_length
            self.max_samples: int | None = (
                self._frame_length + config.max_length * self._frame_shift - 1
            )
            self._time_stride = int(config.time_stride)
            self._freq_patches = (
                config.num_mel_bins - config.patch_size
            ) // config.frequency_stride + 1
            self._time_patches = (config.max_length - config.patch_size) // config.time_stride + 1
            self._fbank_on_device = self.device.type == "cuda" and _has_kaldi_fbank()
        elif self.family == "clap":
            audio_config = config.audio_config if self.model_type == "clap" else config
            if fe.feature_size != audio_config.num_mel_bins:
                raise EmbedderError(
                    f"feature extractor of {self.model!r} makes {fe.feature_size} mel bins but "
                    f"the model takes {audio_config.num_mel_bins}; save the matching "
                    "ClapFeatureExtractor"
                )
            if fe.truncation == "fusion" and not audio_config.enable_fusion:
                raise EmbedderError(
                    f"feature extractor of {self.model!r} uses truncation='fusion' (4-channel "
                    "input) but the model was built without fusion; save a ClapFeatureExtractor "
                    "with truncation='rand_trunc'"
                )
            self.min_samples = 1
            self.max_samples = int(fe.nb_max_samples)
        else:
            receptive_field = 1
            for kernel, stride in zip(
                reversed(config.conv_kernel), reversed(config.conv_stride), strict=True
            ):
                receptive_field = (receptive_field - 1) * stride + kernel
            self.min_samples = receptive_field
            self.max_samples = None

    # ------------------------------------------------------------------ public API

    @property
    def spec(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.model,
            "revision": self.revision,
            "pooling": self.pooling,
            "layer": self.layer,
            "dtype": self.dtype,
        }

    def __repr__(self) -> str:
        return (
            f"HFEmbedder(model={self.model!r}, model_type={self.model_type!r}, "
            f"pooling={self.pooling!r}, layer={self.layer}, dim={self.dim}, "
            f"device={str(self.device)!r}, dtype={str(self.torch_dtype).removeprefix('torch.')!r})"
        )

    @property
    def text_available(self) -> bool:
        """True when texts can be embedded into the same space as the windows: a full CLAP
        checkpoint (text tower included) embedded with ``projection`` pooling."""
        return self.family == "clap" and self.model_type == "clap" and self.pooling == "projection"

    def text_unavailable_reason(self) -> str | None:
        if self.text_available:
            return None
        if self.family != "clap":
            return f"{self.model_type} models have no text tower (only CLAP models do)"
        if self.model_type != "clap":
            return "this CLAP checkpoint holds the audio tower only (no text tower)"
        return f"pooling {self.pooling!r} is not CLAP's joint audio-text space (use projection)"

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """Texts -> ``(n_texts, dim)`` float32 from CLAP's text tower, in the joint space the
        ``projection`` audio embeddings live in (compare them by cosine)."""
        reason = self.text_unavailable_reason()
        if reason is not None:
            raise EmbedderError(f"model {self.model!r} cannot embed text: {reason}")
        if self._text is None:
            import transformers

            try:
                with _quiet_transformers():
                    tower = transformers.ClapTextModelWithProjection.from_pretrained(
                        self._source, config=self._config.text_config, **self._hub_kwargs()
                    )
                    tokenizer = transformers.AutoTokenizer.from_pretrained(
                        self._source, **self._hub_kwargs()
                    )
            except Exception as exc:
                raise EmbedderError(
                    f"cannot load the text tower or tokenizer of model {self.model!r} ({exc}); "
                    "save the tokenizer next to the model with tokenizer.save_pretrained(dir)"
                ) from exc
            tower.eval()
            tower.to(device=self.device, dtype=self.torch_dtype)
            self._text = (tower, tokenizer)
        tower, tokenizer = self._text
        tokens = tokenizer(
            [str(t) for t in texts], padding=True, truncation=True, return_tensors="pt"
        )
        tokens = {k: v.to(self.device) for k, v in tokens.items()}
        with torch.inference_mode():
            return tower(**tokens).text_embeds.float().cpu().numpy()

    def embed(self, windows: np.ndarray) -> np.ndarray:
        """``(n_windows, window_samples)`` float32 -> ``(n_windows, dim)`` float32."""
        windows = np.asarray(windows)
        if windows.ndim != 2:
            raise EmbedderError(f"windows must be (n_windows, window_samples), got {windows.shape}")
        n, length = windows.shape
        if n == 0:
            return np.empty((0, self.dim), dtype=np.float32)
        seconds = length / self.sample_rate
        if length < self.min_samples:
            raise EmbedderError(
                f"windows of {length} samples ({seconds:.3f} s) are shorter than the "
                f"{self.min_samples} samples model {self.model!r} needs; use longer windows"
            )
        if self.max_samples is not None and length > self.max_samples:
            raise EmbedderError(
                f"windows of {length} samples ({seconds:.2f} s) are longer than the "
                f"{self.max_samples} samples ({self.max_samples / self.sample_rate:.2f} s) "
                f"model {self.model!r} takes; use shorter windows"
            )
        windows = np.ascontiguousarray(windows, dtype=np.float32)
        if not np.isfinite(windows).all():
            raise EmbedderError("windows contain NaN or infinity")
        out = np.empty((n, self.dim), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                batch = windows[start : start + self.batch_size]
                out[start : start + len(batch)] = self._embed_batch(batch).cpu().numpy()
        return out

    # ------------------------------------------------------------------ forward

    def _hidden(self, output: Any) -> torch.Tensor:
        if self._layer_index == self.num_layers:
            return output.last_hidden_state
        return output.hidden_states[self._layer_index]

    def _embed_batch(self, batch: np.ndarray) -> torch.Tensor:
        """``(b, window_samples)`` -> ``(b, dim)`` float32 on the model's device."""
        need_hidden = self._layer_index != self.num_layers
        if self._fbank_on_device:
            features = {"input_values": self._ast_fbank(batch)}
        else:
            kwargs: dict[str, Any] = {"sampling_rate": self.sample_rate, "return_tensors": "pt"}
            if self.family == "wav2vec2":
                kwargs["return_attention_mask"] = False  # equal lengths: nothing is padded
            features = self._fe(list(batch), **kwargs)

        if self.family == "clap":
            x = features["input_features"].to(self.device, dtype=self.torch_dtype)
            # Windows never exceed max_samples, so none is "longer"; the feature extractor
            # would mark one at random in fusion mode, making vectors depend on the batch.
            is_longer = torch.zeros((len(batch), 1), dtype=torch.bool, device=self.device)
            output = self._model.audio_model(input_features=x, is_longer=is_longer)
            if self.pooling == "projection":
                return self._model.audio_projection(output.pooler_output).float()
            hidden = output.last_hidden_state  # (b, channels, freq, time)
            return self._pool(hidden.flatten(2).transpose(1, 2))

        x = features["input_values"].to(self.device, dtype=self.torch_dtype)
        output = self._model(input_values=x, output_hidden_states=need_hidden)
        hidden = self._hidden(output)
        if self.family == "ast":
            if self.pooling == "cls":
                return ((hidden[:, 0] + hidden[:, 1]) / 2).float()
            tokens = hidden[:, 2:]
            keep = self._ast_patches(batch.shape[1])
            if keep is not None:
                tokens = tokens[:, keep.to(tokens.device)]
            return self._pool(tokens)
        return self._pool(hidden)

    def _ast_fbank(self, batch: np.ndarray) -> torch.Tensor:
        """``ASTFeatureExtractor`` on the model's device: ``(b, samples)`` -> ``(b, frames, mels)``.

        The same Kaldi fbank call, zero padding to ``max_length`` frames and normalisation as
        the feature extractor, which runs them window by window on the CPU; on a GPU that CPU
        work, not the model, would bound the throughput.
        """
        import torchaudio.compliance.kaldi as ta_kaldi

        fe = self._fe
        waves = torch.from_numpy(batch).to(self.device)
        out = torch.zeros((len(batch), fe.max_length, fe.num_mel_bins), device=self.device)
        for i, wave in enumerate(waves):
            fbank = ta_kaldi.fbank(
                wave[None],
                sample_frequency=fe.sampling_rate,
                window_type="hanning",
                num_mel_bins=fe.num_mel_bins,
            )
            frames = min(fbank.shape[0], fe.max_length)
            out[i, :frames] = fbank[:frames]
        if fe.do_normalize:
            out = (out - fe.mean) / (fe.std * 2)
        return out

    def _ast_patches(self, n_samples: int) -> torch.Tensor | None:
        """Indices of the AST patches that start inside the real frames (None: all of them)."""
        n_frames = 1 + (n_samples - self._frame_length) // self._frame_shift
        starts = torch.arange(self._time_patches) * self._time_stride
        real = starts < n_frames
        if bool(real.all()):
            return None
        # Patch tokens are ordered frequency-major: index = f * time_patches + t.
        grid = real.repeat(self._freq_patches)
        return torch.nonzero(grid).squeeze(1)

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(b, n_tokens, channels)`` -> ``(b, dim)`` float32."""
        tokens = tokens.float()
        if self.pooling == "mean":
            return tokens.mean(dim=1)
        if self.pooling == "max":
            return tokens.amax(dim=1)
        return torch.cat([tokens.mean(dim=1), tokens.std(dim=1, unbiased=False)], dim=-1)
