"""CLIP-T (frame-text alignment) and CLIP-I (frame-to-frame consistency) of a video, through transformers' CLIPModel.

Images are preprocessed here with torch (no torchvision, no CLIPImageProcessor download): shortest side resized to
the crop size with antialiased bicubic, centre crop, CLIP mean/std normalisation.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer, CLIPModel, PreTrainedTokenizerBase

from genprop_cli.errors import WeightsError

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipScorer", "ImageTransform"]

# OpenAI CLIP's normalisation constants (the values in every openai/clip-* preprocessor_config.json).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

Tokenizer = Callable[..., Mapping[str, Any]]


@dataclass(frozen=True)
class ImageTransform:
    """Resize the shortest side to `shortest_edge` (None = `size`), centre-crop `size` x `size`, normalise."""

    size: int
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD
    shortest_edge: int | None = None

    def __post_init__(self) -> None:
        if self.shortest_edge is None:
            object.__setattr__(self, "shortest_edge", self.size)  # so equal transforms compare equal
        if self.size <= 0 or self.shortest_edge < self.size:
            raise ValueError(f"bad image transform: crop {self.size}, shortest edge {self.shortest_edge}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("image transform mean and std need three values (R, G, B)")

    @classmethod
    def from_config(cls, config: Mapping[str, Any], default_size: int) -> ImageTransform:
        """Read a preprocessor_config.json-style mapping (crop_size, size, image_mean, image_std)."""
        crop = _edge(config.get("crop_size"), ("height", "shortest_edge")) or default_size
        resize = _edge(config.get("size"), ("shortest_edge", "height")) or crop
        return cls(
            size=crop,
            mean=tuple(config.get("image_mean") or CLIP_MEAN),
            std=tuple(config.get("image_std") or CLIP_STD),
            shortest_edge=resize,
        )

    @classmethod
    def coerce(cls, spec: Any, default_size: int) -> ImageTransform:
        """From None (model size, CLIP mean/std), an ImageTransform, (size, mean, std), or a processor-like object."""
        if spec is None:
            return cls(default_size)
        if isinstance(spec, ImageTransform):
            return spec
        if isinstance(spec, Sequence) and len(spec) == 3:
            size, mean, std = spec
            return cls(int(size), tuple(mean), tuple(std))
        processor = getattr(spec, "image_processor", spec)  # a CLIPProcessor wraps its image processor
        if hasattr(processor, "image_mean"):
            keys = ("crop_size", "size", "image_mean", "image_std")
            return cls.from_config({key: getattr(processor, key, None) for key in keys}, default_size)
        raise TypeError(f"cannot read an image transform from {type(spec).__name__}")


def _edge(value: Any, keys: tuple[str, ...]) -> int | None:
    """A side length from an int, a {"height"/"shortest_edge": n} dict or a SizeDict (processors use all three)."""
    if value is None or isinstance(value, int):
        return value
    for key in keys:
        found = value.get(key) if isinstance(value, Mapping) else getattr(value, key, None)
        if found:
            return int(found)
    return None


def _features(output: Any) -> torch.Tensor:
    """Projected embeddings from get_*_features: a tensor (transformers 4.x) or a ModelOutput / tuple (5.x)."""
    if isinstance(output, torch.Tensor):
        return output
    for name in ("image_embeds", "text_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, tuple) and len(output) > 1:
        return output[1]
    raise TypeError(f"unexpected CLIP feature output {type(output).__name__}")


def _video(video: np.ndarray) -> np.ndarray:
    """Check a uint8 RGB video (T, H, W, 3) or frame (H, W, 3); return a (T, H, W, 3) view."""
    video = np.asarray(video)
    if video.dtype != np.uint8 or video.ndim not in (3, 4) or video.shape[-1] != 3:
        raise ValueError(f"expected a uint8 RGB video (T, H, W, 3), got {video.dtype} {video.shape}")
    video = video[None] if video.ndim == 3 else video
    if video.shape[0] == 0:
        raise ValueError("the video has no frames")
    return video


class ClipScorer:
    """Scores videos with a CLIPModel: CLIP-T against a prompt, CLIP-I between consecutive frames."""

    def __init__(
        self,
        model: CLIPModel,
        image_transform: ImageTransform | tuple[int, Sequence[float], Sequence[float]] | Any | None = None,
        tokenizer: Tokenizer | None = None,
        device: str | torch.device = "cpu",
        *,
        batch_size: int = 16,
    ) -> None:
        """`model` is moved to `device` and put in eval mode; `image_transform` defaults to the model's image size
        with CLIP's mean/std; `tokenizer` is any callable text -> {"input_ids", ["attention_mask"]} (clip_t only)."""
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.transform = ImageTransform.coerce(image_transform, model.config.vision_config.image_size)
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self._max_tokens = model.config.text_config.max_position_embeddings

    @classmethod
    def from_pretrained(
        cls, name_or_path: str, *, local_files_only: bool | None = None, device: str | torch.device = "cpu"
    ) -> ClipScorer:
        """Load a CLIPModel (safetensors only), its tokenizer and preprocessor config from a hub id or a folder.

        `local_files_only=None` follows HF_HUB_OFFLINE. Anything missing raises WeightsError with a one-line fix.
        """
        from huggingface_hub import constants

        offline = bool(constants.HF_HUB_OFFLINE) if local_files_only is None else local_files_only
        folder = Path(name_or_path).expanduser()
        is_folder = folder.is_dir()
        if not is_folder and _looks_like_path(name_or_path):
            raise WeightsError(
                f"CLIP model folder {name_or_path} does not exist or is not a folder; pass a folder saved with "
                "save_pretrained or a hub id such as openai/clip-vit-base-patch32"
            )
        source = str(folder) if is_folder else name_or_path
        try:
            model = CLIPModel.from_pretrained(source, use_safetensors=True, local_files_only=offline)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=offline)
        except (OSError, ValueError) as exc:
            raise _load_error(name_or_path, is_folder, offline, exc) from None
        config = _preprocessor_config(source, is_folder, offline)
        transform = ImageTransform.from_config(config, model.config.vision_config.image_size)
        return cls(model, transform, tokenizer, device)

    # --- embeddings ----------------------------------------------------------------------------------------------

    def preprocess(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised float (N, 3, size, size) on the scorer's device, in the model's dtype."""
        pixels = torch.from_numpy(np.ascontiguousarray(frames)).to(self.device)
        pixels = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        height, width = pixels.shape[-2:]
        short, long = sorted((height, width))
        edge = self.transform.shortest_edge
        resized_long = int(edge * long / short)
        new_size = (edge, resized_long) if height <= width else (resized_long, edge)
        pixels = F.interpolate(pixels, size=new_size, mode="bicubic", antialias=True, align_corners=False)
        # Bicubic overshoots; the reference processor resizes 8-bit images, so clamp and quantise the same way.
        pixels = (pixels * 255.0).round().clamp(0.0, 255.0) / 255.0
        top = (new_size[0] - self.transform.size) // 2
        left = (new_size[1] - self.transform.size) // 2
        pixels = pixels[:, :, top : top + self.transform.size, left : left + self.transform.size]
        mean = torch.tensor(self.transform.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.transform.std, device=self.device).view(1, 3, 1, 1)
        return ((pixels - mean) / std).to(self.model.dtype)

    @torch.inference_mode()
    def image_embeddings(self, video: np.ndarray) -> torch.Tensor:
        """L2-normalised image embeddings, float64 (T, D) on the CPU, of a uint8 (T, H, W, 3) video."""
        video = _video(video)
        chunks = []
        for start in range(0, video.shape[0], self.batch_size):
            pixel_values = self.preprocess(video[start : start + self.batch_size])
            chunks.append(_features(self.model.get_image_features(pixel_values=pixel_values)).double().cpu())
        return F.normalize(torch.cat(chunks), dim=-1)

    @torch.inference_mode()
    def text_embedding(self, text: str) -> torch.Tensor:
        """L2-normalised text embedding, float64 (D,) on the CPU."""
        input_ids, attention_mask = self._tokenize(text)
        output = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask)
        return F.normalize(_features(output).double().cpu()[0], dim=-1)

    def _tokenize(self, text: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask, both long (1, L) on the device; L <= the model's context length."""
        if self.tokenizer is None:
            raise ValueError("clip_t needs a tokenizer; pass one to ClipScorer")
        if isinstance(self.tokenizer, PreTrainedTokenizerBase):
            # Truncation here keeps the end-of-text token, whose state CLIP pools.
            encoded = self.tokenizer([text], truncation=True, max_length=self._max_tokens, return_tensors="pt")
        else:
            encoded = self.tokenizer(text)
        input_ids = torch.as_tensor(encoded["input_ids"], dtype=torch.long).reshape(1, -1)
        mask = encoded.get("attention_mask")
        attention_mask = torch.ones_like(input_ids) if mask is None else torch.as_tensor(mask).reshape(1, -1).long()
        if input_ids.shape[1] > self._max_tokens:
            raise ValueError(f"the prompt is {input_ids.shape[1]} tokens; this CLIP model takes {self._max_tokens}")
        return input_ids.to(self.device), attention_mask.to(self.device)

    # --- scores --------------------------------------------------------------------------------------------------

    def clip_t(self, video: np.ndarray, text: str) -> float:
        """CLIP-T: mean over frames of cos(frame embedding, text embedding), in [-1, 1]; video uint8 (T, H, W, 3)."""
        similarities = self.image_embeddings(video) @ self.text_embedding(text)
        return float(similarities.mean())

    def clip_i(self, video: np.ndarray) -> float:
        """CLIP-I: mean cos between consecutive frames' embeddings, in [-1, 1] (1 = static); nan for one frame."""
        embeddings = self.image_embeddings(video)
        if embeddings.shape[0] < 2:
            return math.nan
        return float((embeddings[:-1] * embeddings[1:]).sum(dim=-1).mean())


# --- loading helpers -------------------------------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    """True for names that cannot be a hub id ("name" or "org/name"), so a missing folder is reported as such."""
    return (
        Path(name).expanduser().exists()
        or name.startswith((".", "~", "/"))
        or "\\" in name
        or name.count("/") > 1
        or Path(name).is_absolute()
    )


def _first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _load_error(name: str, is_folder: bool, offline: bool, exc: BaseException) -> WeightsError:
    """One-line WeightsError for a CLIP checkpoint that would not load."""
    if is_folder:
        return WeightsError(
            f"{name}: cannot load a CLIP model (model.safetensors + tokenizer) from this folder ({_first_line(exc)})"
        )
    if offline:
        return WeightsError(
            f"CLIP model {name} is not in the local Hugging Face cache and downloads are off; "
            f"download it first (hf download {name}) or pass a local folder"
        )
    return WeightsError(
        f"cannot load CLIP model {name} ({_first_line(exc)}); check the name and your connection, "
        "or pass a local folder"
    )


def _preprocessor_config(source: str, is_folder: bool, offline: bool) -> dict[str, Any]:
    """preprocessor_config.json of a folder or hub repo as a dict; {} when there is none (defaults then apply)."""
    if is_folder:
        path = Path(source) / "preprocessor_config.json"
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = Path(hf_hub_download(source, "preprocessor_config.json", local_files_only=offline))
        except (OSError, EntryNotFoundError):
            return {}
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path}: not a readable preprocessor config ({exc})") from None
