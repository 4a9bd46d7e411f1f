"""Evaluation metrics: hand-computed values on tiny arrays, properties, and CLIP scores on a tiny CLIP built here."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays

from genprop_cli.errors import WeightsError
from genprop_cli.evaluation import metrics
from genprop_cli.evaluation.clip_score import ClipScorer, ImageTransform, _features
from genprop_cli.evaluation.metrics import (
    boundary_f,
    iou,
    jaccard_and_f,
    masks_from_marker,
    psnr,
    psnr_m,
    removal_residual,
    ssim,
)

C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def grey(value: int, shape: tuple[int, ...] = (1, 4, 4)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def random_video(seed: int, shape: tuple[int, ...] = (2, 16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(*shape, 3), dtype=np.uint8)


def box(shape: tuple[int, int], rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows, cols] = True
    return mask


# --- PSNR ------------------------------------------------------------------------------------------------------------


def test_psnr_of_a_known_mse():
    assert psnr(grey(100), grey(110)) == pytest.approx(20 * math.log10(255 / 10))
    assert psnr(grey(0), grey(255)) == pytest.approx(0.0)  # uint8 must not wrap around


def test_psnr_identical_is_inf_and_empty_mask_is_nan():
    video = random_video(0)
    assert psnr(video, video) == math.inf
    assert math.isnan(psnr(video, random_video(1), mask=np.zeros(video.shape[:-1], dtype=bool)))


def test_psnr_pools_the_mse_over_all_frames():
    a = np.concatenate([grey(100), grey(100)])
    b = np.concatenate([grey(110), grey(100)])
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / 50))


def test_masked_psnr_ignores_pixels_outside_the_mask():
    a, b = grey(100), grey(100)
    mask = box((1, 4, 4), slice(None), slice(0, 2))
    b[mask] = 110
    b[~mask] = 250
    assert psnr(a, b, mask=mask) == pytest.approx(20 * math.log10(25.5))
    assert psnr(a, b, mask=~mask) == pytest.approx(20 * math.log10(255 / 150))
    per_channel = np.broadcast_to(mask[..., None], a.shape)
    assert psnr(a, b, mask=per_channel) == pytest.approx(psnr(a, b, mask=mask))
    with pytest.raises(ValueError):
        psnr(a, b, mask=mask[:, :2])


def test_psnr_m_measures_the_unedited_region():
    source = grey(100, (2, 4, 4))
    edit = box((4, 4), slice(1, 3), slice(1, 3))
    edit_mask = np.stack([edit, edit])
    output = source.copy()
    output[edit_mask] = 255  # the edit itself is not penalised
    output[~edit_mask] = 105
    assert psnr_m(output, source, edit_mask) == pytest.approx(20 * math.log10(255 / 5))
    assert math.isnan(psnr_m(output, source, np.ones_like(edit_mask)))


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint8, (2, 3, 3, 3)), arrays(np.uint8, (2, 3, 3, 3)))
def test_psnr_is_symmetric_and_non_negative(a, b):
    forward, backward = psnr(a, b), psnr(b, a)
    assert forward == backward
    assert forward >= 0


# --- SSIM ------------------------------------------------------------------------------------------------------------


def test_ssim_window_is_a_normalised_gaussian():
    kernel = metrics._gaussian_kernel()
    assert kernel.shape == (11,)
    assert kernel.sum() == pytest.approx(1.0)
    assert kernel[5] / kernel[4] == pytest.approx(math.exp(1 / (2 * 1.5**2)))


def test_ssim_of_identical_videos_is_one():
    video = random_video(2)
    assert ssim(video, video) == pytest.approx(1.0)


def test_ssim_of_a_constant_offset_matches_the_hand_formula():
    # Flat frames: no variance or covariance, so SSIM = luminance term = (2 mu_a mu_b + C1) / (mu_a^2 + mu_b^2 + C1).
    expected = (2 * 100 * 110 + C1) / (100**2 + 110**2 + C1)
    assert ssim(grey(100, (2, 11, 11)), grey(110, (2, 11, 11))) == pytest.approx(expected)
    assert ssim(grey(100, (12, 13)), grey(110, (12, 13))) == pytest.approx(expected)


def test_ssim_works_on_bt601_luma():
    red = np.zeros((11, 11, 3), dtype=np.uint8)
    red[..., 0] = 200  # Y = 0.299 * 200 = 59.8
    green = np.zeros((11, 11, 3), dtype=np.uint8)
    green[..., 1] = 100  # Y = 0.587 * 100 = 58.7
    expected = (2 * 59.8 * 58.7 + C1) / (59.8**2 + 58.7**2 + C1)
    assert ssim(red, green) == pytest.approx(expected)


def test_ssim_separable_filter_matches_a_direct_2d_window():
    a, b = random_video(11, (1, 12, 13)), random_video(12, (1, 12, 13))
    x, y = a[0].astype(float) @ [0.299, 0.587, 0.114], b[0].astype(float) @ [0.299, 0.587, 0.114]
    window = np.outer(metrics._gaussian_kernel(), metrics._gaussian_kernel())
    values = []
    for top in range(2):
        for left in range(3):
            px, py = x[top : top + 11, left : left + 11], y[top : top + 11, left : left + 11]
            mx, my = (window * px).sum(), (window * py).sum()
            vx, vy = (window * (px - mx) ** 2).sum(), (window * (py - my) ** 2).sum()
            cxy = (window * (px - mx) * (py - my)).sum()
            values.append((2 * mx * my + C1) * (2 * cxy + C2) / ((mx**2 + my**2 + C1) * (vx + vy + C2)))
    assert ssim(a, b) == pytest.approx(np.mean(values))


def test_ssim_is_symmetric_and_negative_for_an_inverted_image():
    a, b = random_video(3), random_video(4)
    assert ssim(a, b) == pytest.approx(ssim(b, a))
    checker = np.indices((16, 16)).sum(axis=0) % 2 * 255
    frame = np.repeat(checker[..., None], 3, axis=-1).astype(np.uint8)
    assert ssim(frame, 255 - frame) < 0


def test_ssim_decreases_with_noise():
    yy, xx = np.mgrid[0:24, 0:24]
    clean = np.repeat(((xx + yy) * 5 + 10)[None, ..., None], 3, axis=-1).astype(np.float64)
    noise = np.random.default_rng(5).standard_normal(clean.shape[:-1])[..., None]
    scores = [ssim(clean.astype(np.uint8), np.clip(clean + s * noise, 0, 255).astype(np.uint8)) for s in (2, 10, 40)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_ssim_rejects_frames_smaller_than_the_window():
    with pytest.raises(ValueError, match="11 x 11"):
        ssim(grey(1, (10, 20)), grey(1, (10, 20)))


# --- removal residual ------------------------------------------------------------------------------------------------


def removal_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Target: grey background; source: a dark object at the left and its lighter shadow at the right."""
    target = grey(100, (1, 4, 4))
    obj = box((1, 4, 4), slice(None), slice(0, 2))
    shadow = box((1, 4, 4), slice(None), slice(2, 4))
    source = target.copy()
    source[obj] = 20
    source[shadow] = 60
    return source, target, obj, shadow


def test_residual_is_zero_when_removed_one_when_kept_half_when_halfway():
    source, target, obj, shadow = removal_scene()
    removed = removal_residual(target, source, target, obj, shadow)
    kept = removal_residual(source, source, target, obj, shadow)
    assert removed["object_mean"] == 0.0 and removed["shadow_mean"] == 0.0
    assert kept["object_mean"] == 1.0 and kept["shadow_mean"] == 1.0
    halfway = target.copy()
    halfway[obj] = 60  # halfway between 20 and 100
    result = removal_residual(halfway, source, target, obj, shadow)
    assert result["object_mean"] == pytest.approx(0.5)
    assert result["shadow_mean"] == 0.0  # shadow removed, object half there


def test_residual_uses_l1_over_channels():
    source, target, obj, shadow = removal_scene()
    output = target.copy()
    output[..., 0][obj] = 20  # one channel of three still shows the object: 80 of 240 per pixel
    assert removal_residual(output, source, target, obj, shadow)["object_mean"] == pytest.approx(1 / 3)


def test_residual_ignores_pixels_where_source_equals_target():
    source, target, obj, _ = removal_scene()
    wide_object = obj | box((1, 4, 4), slice(0, 1), slice(None))
    source[0, 0, 2:] = target[0, 0, 2:]  # part of the wide region had nothing to remove
    output = target.copy()
    output[0, 0, 2:] = 0  # so whatever the output does there is not counted
    result = removal_residual(output, source, target, wide_object, None)
    assert result["object_mean"] == 0.0


def test_residual_per_frame_clipping_and_empty_regions():
    source, target, obj, shadow = removal_scene()
    sources, targets = np.concatenate([source] * 3), np.concatenate([target] * 3)
    output = np.concatenate([target, source, np.zeros_like(target)])  # removed, kept, further off than source
    objects = np.concatenate([obj, obj, obj])
    shadows = np.concatenate([shadow, np.zeros_like(shadow), np.zeros_like(shadow)])
    result = removal_residual(output, sources, targets, objects, shadows)
    np.testing.assert_array_equal(result["object"], [0.0, 1.0, 1.0])
    assert result["object_mean"] == pytest.approx(2 / 3)
    assert result["shadow"][0] == 0.0 and np.isnan(result["shadow"][1:]).all()
    assert result["shadow_mean"] == 0.0  # nan frames are skipped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nothing = removal_residual(output, sources, targets, np.zeros_like(objects), None)
    assert np.isnan(nothing["object"]).all() and math.isnan(nothing["object_mean"])
    assert math.isnan(nothing["shadow_mean"])


@settings(max_examples=50, deadline=None)
@given(arrays(np.uint8, (3, 3, 3, 3)), arrays(np.uint8, (3, 3, 3, 3)), arrays(np.uint8, (3, 3, 3, 3)),
       arrays(np.bool_, (3, 3, 3)))
def test_residual_is_in_unit_interval_or_nan(output, source, target, mask):
    values = removal_residual(output, source, target, mask, mask)["object"]
    finite = values[~np.isnan(values)]
    assert ((finite >= 0) & (finite <= 1)).all()


# --- IoU, boundary F, J&F --------------------------------------------------------------------------------------------


def test_iou_of_hand_drawn_masks():
    pred = box((4, 4), slice(0, 2), slice(0, 2))  # 4 pixels
    gt = box((4, 4), slice(0, 2), slice(1, 3))  # 4 pixels, 2 shared -> union 6
    assert iou(pred, gt) == pytest.approx(2 / 6)
    empty = np.zeros((4, 4), dtype=bool)
    assert iou(empty, empty) == 1.0
    assert iou(pred, empty) == 0.0
    assert iou(np.stack([pred, empty]), np.stack([gt, empty])) == pytest.approx((2 / 6 + 1) / 2)


@settings(max_examples=100, deadline=None)
@given(arrays(np.bool_, (2, 4, 4)), arrays(np.bool_, (2, 4, 4)))
def test_iou_is_symmetric_in_unit_interval_and_one_on_itself(a, b):
    value = iou(a, b)
    assert 0.0 <= value <= 1.0
    assert value == iou(b, a)
    assert iou(a, a) == 1.0


def test_boundary_is_the_inner_ring_and_not_the_image_edge():
    square = box((6, 6), slice(1, 5), slice(1, 5))
    assert metrics._boundary(square).sum() == 12
    assert not metrics._boundary(square)[2:4, 2:4].any()
    at_edge = box((6, 6), slice(None), slice(0, 3))
    np.testing.assert_array_equal(metrics._boundary(at_edge), box((6, 6), slice(None), slice(2, 3)))


def test_disk_dilation():
    point = box((7, 7), slice(3, 4), slice(3, 4))
    assert metrics._dilate(point, 1).sum() == 5
    assert metrics._dilate(point, 2).sum() == 13  # dy^2 + dx^2 <= 4
    corner = box((7, 7), slice(0, 1), slice(0, 1))
    assert metrics._dilate(corner, 1).sum() == 3  # clipped at the image edge


def test_boundary_f_conventions_and_tolerance():
    square = box((10, 10), slice(2, 6), slice(2, 6))
    shifted = box((10, 10), slice(2, 6), slice(3, 7))
    far = box((10, 10), slice(7, 10), slice(7, 10))
    empty = np.zeros((10, 10), dtype=bool)
    assert metrics._tolerance_pixels((10, 10), 0.008) == 1  # ceil(0.008 * 14.1)
    assert boundary_f(square, square) == 1.0
    assert boundary_f(square, far) == 0.0
    assert boundary_f(square, shifted) == 1.0  # 1-px shift within the 1-px tolerance
    assert boundary_f(square, shifted, bound_th=0) < 1.0  # no tolerance: only the shared edges match
    assert boundary_f(square, box((10, 10), slice(2, 6), slice(5, 9))) < 1.0
    assert boundary_f(square, box((10, 10), slice(2, 6), slice(5, 9)), bound_th=3) == 1.0  # >= 1: pixels
    assert boundary_f(empty, empty) == 1.0
    assert boundary_f(square, empty) == 0.0 and boundary_f(empty, square) == 0.0
    full = np.ones((10, 10), dtype=bool)
    assert boundary_f(full, full) == 1.0 and boundary_f(full, square) == 0.0


def test_jaccard_and_f_averages_over_frames():
    square = box((10, 10), slice(2, 6), slice(2, 6))
    empty = np.zeros((10, 10), dtype=bool)
    scores = jaccard_and_f(np.stack([square, square, empty]), np.stack([square, empty, empty]))
    assert scores == pytest.approx({"J": 2 / 3, "F": 2 / 3, "JF": 2 / 3})
    with pytest.raises(ValueError):
        jaccard_and_f(square, square[:5])
    with pytest.raises(ValueError, match="boolean"):
        jaccard_and_f(square.astype(np.uint8), square)


# --- marker masks ----------------------------------------------------------------------------------------------------


def test_masks_from_marker_uses_max_abs_per_channel_inclusive():
    video = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    video[0, 0, 0] = (255, 0, 255)  # the marker
    video[0, 0, 1] = (215, 40, 255)  # 40 off: inside
    video[0, 1, 0] = (255, 41, 255)  # 41 off in one channel: outside
    video[1, 1, 1] = (250, 10, 230)
    masks = masks_from_marker(video, (255, 0, 255))
    assert masks.shape == (2, 2, 2) and masks.dtype == bool
    expected = np.zeros((2, 2, 2), dtype=bool)
    expected[0, 0, 0] = expected[0, 0, 1] = expected[1, 1, 1] = True
    np.testing.assert_array_equal(masks, expected)
    assert masks_from_marker(video[0], (255, 0, 255), tolerance=0).sum() == 1


# --- CLIP scores -----------------------------------------------------------------------------------------------------


EOS = 3
VOCAB = {"[PAD]": 0, "[UNK]": 1, "<bos>": 2, "<eos>": EOS, " ": 4}
VOCAB.update({c: 5 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz")})


def tiny_clip() -> transformers.CLIPModel:
    torch.manual_seed(0)
    common = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = transformers.CLIPConfig(
        text_config=dict(common, vocab_size=100, max_position_embeddings=24, bos_token_id=2, eos_token_id=EOS,
                         pad_token_id=0),
        vision_config=dict(common, image_size=32, patch_size=8),
        projection_dim=16,
    )
    return transformers.CLIPModel(config).eval()


def tiny_tokenizer() -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    backend = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    backend.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", 2), ("<eos>", EOS)]
    )
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", bos_token="<bos>", eos_token="<eos>"
    )


def char_tokenizer(text: str) -> dict[str, list[int]]:
    return {"input_ids": [2, *(VOCAB.get(c, 1) for c in text), EOS]}


@pytest.fixture(scope="module")
def scorer() -> ClipScorer:
    return ClipScorer(tiny_clip(), None, tiny_tokenizer(), batch_size=4)


def varied_video(frames: int = 6, size: tuple[int, int] = (32, 32)) -> np.ndarray:
    return random_video(7, (frames, *size))


def test_clip_i_of_a_static_video_is_one(scorer):
    static = np.repeat(random_video(8, (1, 40, 56)), 10, axis=0)  # 10 frames over three batches of 4
    assert scorer.clip_i(static) == pytest.approx(1.0, abs=1e-5)
    assert math.isnan(scorer.clip_i(static[:1]))


def test_clip_i_drops_when_frames_change(scorer):
    video = np.repeat(random_video(9, (1, 32, 32)), 6, axis=0)
    still = scorer.clip_i(video)
    video[3:] = random_video(10, (3, 32, 32))
    one_cut = scorer.clip_i(video)
    every_frame = scorer.clip_i(varied_video())
    assert still > one_cut + 1e-4
    assert one_cut > every_frame


def test_clip_t_equals_the_models_own_cosine(scorer):
    video = varied_video(3)
    model = scorer.model
    # 32 x 32 frames need no resize or crop, so the pixels are normalised by hand here.
    mean, std = torch.tensor([0.48145466, 0.4578275, 0.40821073]), torch.tensor([0.26862954, 0.26130258, 0.27577711])
    pixels = (torch.from_numpy(video).permute(0, 3, 1, 2).float() / 255 - mean[:, None, None]) / std[:, None, None]
    ids = torch.tensor([[2, VOCAB["a"], 4, VOCAB["c"], VOCAB["a"], VOCAB["t"], EOS]])
    with torch.no_grad():
        image = _features(model.get_image_features(pixel_values=pixels))
        text = _features(model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids)))
    expected = torch.nn.functional.cosine_similarity(image, text).mean().item()
    score = scorer.clip_t(video, "a cat")
    assert -1.0 <= score <= 1.0
    assert score == pytest.approx(expected, abs=1e-5)
    plain = ClipScorer(model, (32, mean.tolist(), std.tolist()), char_tokenizer)
    assert plain.clip_t(video, "a cat") == pytest.approx(expected, abs=1e-5)


def test_clip_t_needs_a_tokenizer_and_uint8_frames(scorer):
    with pytest.raises(ValueError, match="tokenizer"):
        ClipScorer(scorer.model).clip_t(varied_video(1), "a cat")
    with pytest.raises(ValueError, match="uint8"):
        scorer.clip_i(varied_video(2).astype(np.float32))
    with pytest.raises(ValueError, match="tokens"):
        ClipScorer(scorer.model, None, char_tokenizer).clip_t(varied_video(1), "x" * 30)


def test_preprocess_resizes_the_short_side_and_centre_crops(scorer):
    landscape = np.zeros((1, 40, 80, 3), dtype=np.uint8)
    landscape[:, :, 20:60] = 255  # the centre half is white: after the crop everything is white
    pixels = scorer.preprocess(landscape)
    assert pixels.shape == (1, 3, 32, 32)
    white = (1 - torch.tensor(scorer.transform.mean)) / torch.tensor(scorer.transform.std)
    torch.testing.assert_close(pixels[0, :, :, 4:-4], white[:, None, None].expand(3, 32, 24), atol=1e-5, rtol=0)
    assert scorer.preprocess(np.zeros((2, 90, 33, 3), dtype=np.uint8)).shape == (2, 3, 32, 32)


def test_preprocess_is_close_to_clips_own_image_processor(scorer):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    yy, xx = np.mgrid[0:45, 0:60]
    frame = np.stack([(xx * 4) % 256, (yy * 5) % 256, (xx + yy) * 2], axis=-1).astype(np.uint8)
    processor = CLIPImageProcessorPil(crop_size=32, size={"shortest_edge": 32})
    reference = processor(images=[frame], return_tensors="pt")["pixel_values"]
    assert ImageTransform.coerce(processor, 224) == ImageTransform(32, shortest_edge=32)
    assert (scorer.preprocess(frame[None]) - reference).abs().mean() < 0.02


def test_features_accepts_tensors_outputs_and_tuples():
    embeds = torch.ones(2, 4)
    output = transformers.modeling_outputs.BaseModelOutputWithPooling(last_hidden_state=torch.zeros(2, 3, 4),
                                                                      pooler_output=embeds)
    assert _features(embeds) is embeds
    assert _features(output) is embeds
    assert _features((torch.zeros(2, 3, 4), embeds)) is embeds


def test_from_pretrained_round_trip_gives_the_same_scores(scorer, tmp_path: Path):
    scorer.model.save_pretrained(tmp_path)
    scorer.tokenizer.save_pretrained(tmp_path)
    loaded = ClipScorer.from_pretrained(str(tmp_path), local_files_only=True)
    video = varied_video(4, (36, 48))
    assert loaded.transform == scorer.transform
    assert loaded.clip_t(video, "a dog") == pytest.approx(scorer.clip_t(video, "a dog"), abs=1e-6)
    assert loaded.clip_i(video) == pytest.approx(scorer.clip_i(video), abs=1e-6)
    config = {"crop_size": {"height": 32, "width": 32}, "size": {"shortest_edge": 40},
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(config))
    assert ClipScorer.from_pretrained(str(tmp_path)).transform == ImageTransform(32, (0.5,) * 3, (0.25,) * 3, 40)


def test_from_pretrained_errors_are_weights_errors(tmp_path: Path):
    with pytest.raises(WeightsError, match="does not exist"):
        ClipScorer.from_pretrained(str(tmp_path / "missing" / "clip"))
    with pytest.raises(WeightsError, match="cannot load a CLIP model"):
        ClipScorer.from_pretrained(str(tmp_path))  # a folder with nothing in it
    with pytest.raises(WeightsError, match="download it first") as caught:
        ClipScorer.from_pretrained("genprop-test/no-such-clip", local_files_only=True)
    assert "\n" not in str(caught.value)
