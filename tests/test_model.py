"""StereoModel: architecture against CroCo's key manifest, shapes, masking semantics, attention, errors."""

from __future__ import annotations

import json

import pytest
import torch

import madis_stereo as ms
from madis_stereo.errors import ConfigError
from madis_stereo.model import blocks
from madis_stereo.model.checkpoint import from_croco_state_dict, to_croco_state_dict
from madis_stereo.model.config import ModelConfig, default_hooks
from madis_stereo.model.masking import random_masks
from madis_stereo.model.rope import RoPE2D, apply_rope, grid_positions

CROCO_PRESETS = ["vitb_smalldec", "vitb_basedec", "vitl_basedec"]


@pytest.fixture(scope="module")
def manifest(croco_dir):
    return json.loads((croco_dir / "croco_key_manifest.json").read_text())


def meta_model(name: str) -> ms.StereoModel:
    with torch.device("meta"):
        return ms.StereoModel(ModelConfig.preset(name))


@pytest.mark.parametrize("name", CROCO_PRESETS)
def test_preset_matches_croco_key_manifest(manifest, name):
    spec = manifest[name]
    model = meta_model(name)
    cfg = model.config
    kw = spec["croco_kwargs"]
    assert (cfg.enc_embed_dim, cfg.enc_depth, cfg.enc_num_heads, cfg.dec_embed_dim, cfg.dec_depth,
            cfg.dec_num_heads) == (kw["enc_embed_dim"], kw["enc_depth"], kw["enc_num_heads"], kw["dec_embed_dim"],
                                   kw["dec_depth"], kw["dec_num_heads"])
    assert list(cfg.hooks) == spec["dpt_hooks"]
    for kind in ("stereo", "pretrain"):
        ours = {k: list(v.shape) for k, v in to_croco_state_dict(model, kind).items()}
        assert ours == spec[f"{kind}_state_dict"], kind


@pytest.mark.parametrize("name", CROCO_PRESETS)
@pytest.mark.parametrize("kind", ["stereo", "pretrain"])
def test_croco_key_set_loads_without_gaps(manifest, name, kind):
    model = meta_model(name)
    state = {k: torch.empty(shape, device="meta") for k, shape in manifest[name][f"{kind}_state_dict"].items()}
    not_in_file = from_croco_state_dict(model, state, name, kind)
    if kind == "stereo":  # CroCo-Stereo files drop the pretraining-only parameters
        assert not_in_file == ["mask_token", "recon_head.bias", "recon_head.weight"]
    else:  # pretraining files have no stereo head
        assert not_in_file and all(k.startswith("head.") for k in not_in_file)
        assert len(not_in_file) == sum(1 for k in model.state_dict() if k.startswith("head."))


def test_default_hooks_formula():
    assert default_hooks(12, 8) == (10, 13, 16, 19)
    assert default_hooks(12, 12) == (11, 15, 19, 23)
    assert default_hooks(24, 12) == (23, 27, 31, 35)
    assert default_hooks(4, 8) == (2, 5, 8, 11)


@pytest.mark.parametrize("name", ["tiny", "small", *CROCO_PRESETS])
def test_config_yaml_round_trip(name):
    cfg = ModelConfig.preset(name, dpt_hooks=(1, 2, 3, 4))
    assert ModelConfig.from_yaml(cfg.to_yaml()) == cfg
    assert ModelConfig.from_dict({"preset": name}) == ModelConfig.preset(name)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="'enc_dept'"):
        ModelConfig.from_dict({"enc_dept": 3})
    with pytest.raises(ConfigError, match="unknown model preset 'huge'"):
        ModelConfig.preset("huge")
    with pytest.raises(ValueError, match="divisible"):
        ModelConfig(enc_embed_dim=100, enc_num_heads=3)
    with pytest.raises(ValueError, match="dpt_hooks"):
        ModelConfig.preset("tiny", dpt_hooks=(0, 1, 2, 99))
    with pytest.raises(ConfigError, match="confidence mode"):
        ModelConfig.preset("tiny", conf_mode="conf_bogus")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return ms.StereoModel(ModelConfig.preset("tiny")).eval()


def pair(b=2, h=64, w=96):
    g = torch.Generator().manual_seed(1)
    return torch.randn(b, 3, h, w, generator=g), torch.randn(b, 3, h, w, generator=g)


def test_forward_shapes_and_finite(tiny):
    left, right = pair()
    with torch.no_grad():
        out = tiny(left, right)
    assert out.disparity.shape == (2, 1, 64, 96) and out.confidence.shape == (2, 1, 64, 96)
    assert torch.isfinite(out.disparity).all() and torch.isfinite(out.confidence).all()



def test_forward_intermediates_follows_timm_and_feeds_the_dpt_head(tiny):
    left, right = pair()
    depth = 8  # tiny: 4 encoder + 4 decoder layers, hooks (1, 3, 5, 7)
    with torch.no_grad():
        final, every = tiny.forward_intermediates(left, right)
        hooked = tiny.forward_intermediates(left, right, tiny.hooks, intermediates_only=True)
        last_two = tiny.forward_intermediates(left, right, 2, intermediates_only=True)
        negative = tiny.forward_intermediates(left, right, [-1], intermediates_only=True)
        head = tiny.head(hooked, (64, 96))
        out = tiny(left, right)
    assert len(every) == depth and [t.shape for t in every[:4]] == [(2, 24, 96)] * 4
    assert final.shape == (2, 24, 96) and torch.equal(final, every[-1])  # last decoder output is normalised
    for got, index in zip(hooked, tiny.hooks):
        assert torch.equal(got, every[index])
    assert torch.equal(last_two[0], every[6]) and torch.equal(negative[0], every[7])
    assert torch.equal(head[:, 0:1], out.disparity) and torch.equal(head[:, 1:2], out.confidence)
    # encoder taps of a masked view are zero at the masked slots
    mask = torch.zeros(2, 24, dtype=torch.bool)
    mask[:, :6] = True
    masked = tiny.forward_intermediates(left, right, [0], mask_left=mask, intermediates_only=True)[0]
    assert (masked[:, :6] == 0).all() and (masked[:, 6:] != 0).any()
    for bad in (0, 9, [8], [-9]):
        with pytest.raises(ms.InputError, match="layers"):
            tiny.forward_intermediates(left, right, bad)

def test_masked_forward_every_parameter_gets_a_gradient():
    model = ms.StereoModel(ModelConfig.preset("tiny"))
    left, right = pair(h=64, w=64)
    masks = random_masks(4, 16, 0.4, torch.Generator().manual_seed(0))
    out = model.forward_masked(left, right, masks[:2], masks[2:])
    assert out.recon_left.shape == out.recon_right.shape == (2, 16, 768)
    (out.disparity.mean() + out.confidence.mean() + out.recon_left.mean() + out.recon_right.mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    # CroCo's coarsest fusion block owns a residual unit for a skip input it never receives; the parameters
    # exist only so that CroCo checkpoints load one-to-one.
    assert missing == [f"head.fusion.3.rcu1.conv{i}.{p}" for i in (1, 2) for p in ("weight", "bias")]


def test_unmasked_forward_masked_equals_forward(tiny):
    left, right = pair()
    none = torch.zeros(2, 24, dtype=torch.bool)
    with torch.no_grad():
        a = tiny(left, right)
        b = tiny.forward_masked(left, right, none, none)
    assert torch.allclose(a.disparity, b.disparity, atol=1e-5)
    assert torch.allclose(a.confidence, b.confidence, atol=1e-5)


def test_right_pass_is_the_mirrored_left_pass(tiny):
    left, right = pair()
    masks = random_masks(4, 24, 0.4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        both = tiny.forward_masked(left, right, masks[:2], masks[2:])
        mirrored = tiny.forward_masked(right, left, masks[2:], masks[:2])
    assert torch.allclose(both.recon_right, mirrored.recon_left, atol=1e-5)


def test_masked_pixels_cannot_influence_visible_encoder_tokens(tiny):
    left, _ = pair(b=1)
    mask = random_masks(1, 24, 0.4, torch.Generator().manual_seed(5))
    keep = ms.model.visible_index(mask)
    changed = left.clone()
    for t in torch.nonzero(mask[0]).flatten().tolist():  # scramble every masked 16x16 patch
        y, x = divmod(t, 6)
        changed[:, :, y * 16:(y + 1) * 16, x * 16:(x + 1) * 16] = torch.randn(1, 3, 16, 16) * 10
    with torch.no_grad():
        a, _ = tiny.forward_encoder(left, keep)
        b, _ = tiny.forward_encoder(changed, keep)
        c, _ = tiny.forward_encoder(changed)  # without masking the change must show
    assert torch.equal(a, b)
    assert not torch.allclose(a, c.gather(1, keep[..., None].expand(-1, -1, a.shape[-1])))


def test_attention_capture_matches_sdpa_and_rows_sum_to_one(tiny):
    left, right = pair(b=1)
    calls = []
    with torch.no_grad():
        ref = tiny(left, right)
        with tiny.capture_attention(lambda name, w: calls.append((name, w.shape, w.sum(-1)))):
            got = tiny(left, right)
    assert torch.allclose(ref.disparity, got.disparity, atol=1e-4)
    cfg = tiny.config
    assert len(calls) == cfg.enc_depth + 2 * cfg.dec_depth
    assert calls[0][0] == "enc_blocks.0.attn" and calls[0][1] == (2, cfg.enc_num_heads, 24, 24)
    assert any(name == "dec_blocks.0.cross_attn" for name, _, _ in calls)
    for _, _, sums in calls:
        assert torch.allclose(sums, torch.ones_like(sums), atol=1e-5)
    assert all(m.hook is None for m in tiny.modules() if hasattr(m, "hook"))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cpu_half_precision_attention_matches_sdpa(monkeypatch, dtype):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 3, 40, 16, generator=g)
    k, v = torch.randn(2, 3, 56, 16, generator=g), torch.randn(2, 3, 56, 16, generator=g)  # Nq != Nk
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    monkeypatch.setattr(blocks, "QUERY_BLOCK", 16)  # 40 queries: blocks of 16, 16 and 8
    calls = []
    blocked = blocks._blocked_attention
    monkeypatch.setattr(blocks, "_blocked_attention", lambda *a: calls.append(1) or blocked(*a))
    with torch.inference_mode():
        got = blocks.attention(q.to(dtype), k.to(dtype), v.to(dtype))
    assert calls and got.dtype == dtype and got.shape == ref.shape
    assert (got.float() - ref).abs().max() < 2e-2
    # fp32 and anything that needs gradients keep scaled_dot_product_attention (bit-identical)
    assert torch.equal(blocks.attention(q, k, v), ref) and len(calls) == 1


def _spy_exp2(monkeypatch) -> list[bool]:
    """Records, per query block, whether the bf16 split softmax (``_exp2_weights``) was taken."""
    taken: list[bool] = []
    split = blocks._exp2_weights

    def spy(scores):
        result = split(scores)
        taken.append(result is not None)
        return result

    monkeypatch.setattr(blocks, "_exp2_weights", spy)
    return taken


def test_bf16_attention_takes_the_split_softmax_and_declines_it_when_unsafe(monkeypatch):
    g = torch.Generator().manual_seed(1)
    d = 16
    q, k, v = (torch.randn(1, 1, n, d, generator=g) for n in (24, 40, 40))  # one head: blocks don't depend on threads
    monkeypatch.setattr(blocks, "QUERY_BLOCK", 16)
    taken = _spy_exp2(monkeypatch)

    def check(q, k, v):
        ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        with torch.inference_mode():
            got = blocks.attention(q.bfloat16(), k.bfloat16(), v.bfloat16()).float()
        assert torch.isfinite(got).all() and (got - ref).abs().max() < 2e-2

    check(q, k, v)  # ordinary scores: both blocks (queries 16 + 8) through the split softmax
    assert taken == [True, True]
    # query 0 sees every key at +/-1000 (exp overflows, then the row underflows); every key shares that
    # component, so its softmax is uniform; the block holding it must take torch.softmax
    k[..., 0] = 5.0
    for sign in (1.0, -1.0):
        taken.clear()
        q[0, 0, 0] = 0.0
        q[0, 0, 0, 0] = sign * 800.0
        check(q, k, v)
        assert taken == [False, True], sign  # the first block declined, the second split


def test_rope_depends_only_on_relative_position():
    rope = RoPE2D(16, 100.0)
    cos, sin = rope.tables(6, 7, torch.device("cpu"))
    pos = grid_positions(6, 7)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(16, generator=g), torch.randn(16, generator=g)

    def score(i, j):
        return (apply_rope(q, cos[i], sin[i]) * apply_rope(k, cos[j], sin[j])).sum()

    def idx(y, x):
        return int(((pos[:, 0] == y) & (pos[:, 1] == x)).nonzero())

    a = score(idx(1, 2), idx(3, 5))
    b = score(idx(2, 3), idx(4, 6))  # both shifted by (1, 1)
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, score(idx(1, 2), idx(3, 4)), atol=1e-3)
    assert rope.tables(6, 7, torch.device("cpu"))[0] is cos  # cached per grid


def test_patch_embedding_tokens_are_contiguous():
    # the encoder's residual stream inherits this layout: transposed, every add is strided and every norm copies
    embed = ms.StereoModel(ModelConfig.preset("tiny")).patch_embed
    assert embed(torch.zeros(1, 3, 64, 96)).is_contiguous()


def test_bad_inputs_get_clear_errors(tiny):
    left, right = pair()
    with pytest.raises(ms.InputError, match="differ in size"):
        tiny(left, right[..., :64])
    with pytest.raises(ms.InputError, match="not a multiple of 32"):
        tiny(left[..., :80], right[..., :80])
    with pytest.raises(ms.InputError, match=r"\[B, 3, H, W\]"):
        tiny(left[:, :1], right[:, :1])
    with pytest.raises(ms.InputError, match=r"mask_left has shape \[2, 20\], expected \[2, 24\]"):
        tiny.forward_masked(left, right, torch.zeros(2, 20, dtype=torch.bool))
    with pytest.raises(ms.InputError, match="bool"):
        tiny.forward_masked(left, right, torch.zeros(2, 24))
    uneven = torch.zeros(2, 24, dtype=torch.bool)
    uneven[0, :3] = True
    with pytest.raises(ms.InputError, match="same number"):
        tiny.forward_masked(left, right, uneven)


def test_random_masks_counts_and_independence():
    g = torch.Generator().manual_seed(0)
    masks = random_masks(64, 50, 0.4, g)
    assert masks.dtype == torch.bool and masks.shape == (64, 50)
    assert (masks.sum(1) == 20).all()
    assert len({tuple(m.tolist()) for m in masks}) == 64  # independent rows
    freq = masks.float().mean(0)  # uniform over positions
    assert freq.min() > 0.15 and freq.max() < 0.65
    again = random_masks(64, 50, 0.4, torch.Generator().manual_seed(0))
    assert torch.equal(masks, again)
    with pytest.raises(ms.InputError):
        random_masks(1, 10, 1.0)


def test_training_forward_works_after_inference_mode_prediction():
    # RoPE tables cached under inference_mode are inference tensors; a later autograd forward at the same grid
    # (training after a validation pass) must not reuse them.
    model = ms.StereoModel(ModelConfig.preset("tiny", crop=(64, 96)))
    left, right = pair(b=1)
    ms.tiled_predict(model, left, right, crop=(64, 96))
    model(left, right).disparity.mean().backward()
    assert model.patch_embed.proj.weight.grad is not None
