"""StereoModel: the CroCo-Stereo network (shared ViT encoder, cross-attention decoder, DPT head) with the
masked forward used by MaDis-Stereo training.

Shapes: images [B, 3, H, W] (ImageNet-normalised; H and W multiples of 32 for the DPT head, multiples of the
patch size for the encoder, decoder and reconstruction head), tokens [B, N, C] with N = (H/16)(W/16) in
row-major order, masks [B, N] bool (True = masked).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, overload

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from madis_stereo.errors import InputError
from madis_stereo.model.blocks import LAYER_NORM_EPS, Attention, CrossAttention, DecoderBlock, EncoderBlock, Rope
from madis_stereo.model.config import ModelConfig
from madis_stereo.model.dpt import DPTHead
from madis_stereo.model.masking import visible_index
from madis_stereo.model.rope import RoPE2D

__all__ = ["MaskedStereoOutput", "PairEncoding", "StereoModel", "StereoOutput", "check_pair", "patchify"]

SIZE_MULTIPLE = 32


@dataclass
class StereoOutput:
    """disparity [B, 1, H, W] (left-image pixels) and confidence [B, 1, H, W] (raw logit)."""

    disparity: Tensor
    confidence: Tensor


@dataclass
class MaskedStereoOutput:
    """Masked forward: disparity/confidence of the left view and per-token patch reconstructions.

    recon_left / recon_right: [B, N, patch*patch*3], layout (py, px, rgb); recon_right is None when the
    right view was not masked. disparity / confidence are None when the DPT head did not run (an image size
    that is not a multiple of 32, or ``disparity=False``).
    """

    disparity: Tensor | None
    confidence: Tensor | None
    recon_left: Tensor | None
    recon_right: Tensor | None


@dataclass
class PairEncoding:
    """Encoder outputs of a stereo pair (visible tokens only for a masked view).

    left_hooks: the left view's encoder block outputs tapped by the DPT head (index -> [B, n, C]).
    left / right: the final, normalised encoder outputs. keep_*: [B, n] visible-token indices or None.
    """

    left_hooks: dict[int, Tensor]
    left: Tensor
    right: Tensor
    keep_left: Tensor | None
    keep_right: Tensor | None
    image_size: tuple[int, int]


def check_pair(left: Tensor, right: Tensor, multiple: int = SIZE_MULTIPLE) -> None:
    """Raise InputError unless left/right are float [B, 3, H, W] of one size with H, W multiples of ``multiple``."""
    for name, img in (("left", left), ("right", right)):
        if not isinstance(img, Tensor):
            raise InputError(f"{name} image must be a torch.Tensor, got {type(img).__name__}")
        if img.dim() != 4 or img.shape[1] != 3:
            raise InputError(f"{name} image must have shape [B, 3, H, W], got {list(img.shape)}")
        if not img.is_floating_point():
            raise InputError(f"{name} image must be a normalised float tensor, got dtype {img.dtype}")
    if left.shape != right.shape:
        raise InputError(f"left and right images differ in size: {list(left.shape)} vs {list(right.shape)}")
    _check_multiple(tuple(left.shape[-2:]), multiple)


def _check_multiple(size: tuple[int, int], multiple: int) -> None:
    h, w = size
    if h % multiple or w % multiple:
        hint = ("the DPT head needs multiples of 32; use tiled_predict/predict for arbitrary sizes"
                if multiple == SIZE_MULTIPLE else "the encoder needs whole patches")
        raise InputError(f"image size {h}x{w} is not a multiple of {multiple}; {hint}")


def _run_blocks(blocks: nn.ModuleList, norm: nn.Module, x: Tensor, taps: tuple[int, ...], *args: Any,
                recompute: bool = False) -> tuple[Tensor, dict[int, Tensor]]:
    """``x`` through ``blocks`` (each called with ``*args`` after ``x``), then ``norm``; returns the normalised
    tokens and the outputs of the blocks listed in ``taps`` (the last block's is the normalised one).

    ``recompute``: activation checkpointing while autograd records, each block keeping only its input and
    recomputing its inside during the backward pass (less memory, about a third more compute).
    """
    tapped: dict[int, Tensor] = {}
    last = len(blocks) - 1
    recompute = recompute and torch.is_grad_enabled()
    for i, block in enumerate(blocks):
        x = checkpoint(block, x, *args, use_reentrant=False) if recompute else block(x, *args)
        if i in taps and i != last:
            tapped[i] = x
    x = norm(x)
    if last in taps:
        tapped[last] = x
    return x, tapped


def patchify(images: Tensor, patch: int = 16) -> Tensor:
    """[B, C, H, W] -> [B, N, patch*patch*C] with pixel layout (py, px, channel), tokens row-major."""
    b, c, h, w = images.shape
    x = images.reshape(b, c, h // patch, patch, w // patch, patch).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(b, (h // patch) * (w // patch), patch * patch * c)


class PatchEmbed(nn.Module):
    """Conv2d(3, dim, p, stride p): [B, 3, H, W] -> [B, (H/p)(W/p), dim]."""

    def __init__(self, dim: int, patch_size: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        # contiguous: the encoder's residual stream inherits this layout, and a transposed one made every
        # residual add strided and every layer norm copy its input first (55 ms of a 2.3 s CPU forward)
        return self.proj(x).flatten(2).transpose(1, 2).contiguous()


class StereoModel(nn.Module):
    """CroCo-Stereo / MaDis-Stereo network built from a :class:`ModelConfig`.

    ``activation_checkpointing`` (a runtime switch, not part of the config or the checkpoint): encoder and
    decoder blocks recompute their activations in the backward pass instead of storing them; training
    sets it from ``optim.activation_checkpointing``.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.activation_checkpointing = False
        c = config
        self.patch_embed = PatchEmbed(c.enc_embed_dim, c.patch_size)
        self.enc_rope = RoPE2D(c.enc_embed_dim // c.enc_num_heads, c.rope_freq)
        self.enc_blocks = nn.ModuleList(
            EncoderBlock(c.enc_embed_dim, c.enc_num_heads, c.mlp_ratio) for _ in range(c.enc_depth)
        )
        self.enc_norm = nn.LayerNorm(c.enc_embed_dim, eps=LAYER_NORM_EPS)
        self.decoder_embed = nn.Linear(c.enc_embed_dim, c.dec_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c.dec_embed_dim))
        self.dec_rope = RoPE2D(c.dec_embed_dim // c.dec_num_heads, c.rope_freq)
        self.dec_blocks = nn.ModuleList(
            DecoderBlock(c.dec_embed_dim, c.dec_num_heads, c.mlp_ratio, c.norm_mem) for _ in range(c.dec_depth)
        )
        self.dec_norm = nn.LayerNorm(c.dec_embed_dim, eps=LAYER_NORM_EPS)
        self.hooks = c.hooks
        dims_in = [c.enc_embed_dim if h < c.enc_depth else c.dec_embed_dim for h in self.hooks]
        self.head = DPTHead(dims_in, c.dpt_layer_dims, c.dpt_feature_dim, c.dpt_last_dim, c.num_channels, c.patch_size)
        self.recon_head = nn.Linear(c.dec_embed_dim, c.patch_size**2 * 3)
        self.reset_parameters()

    # ---------------------------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """Xavier-uniform linears (zero bias), unit LayerNorms, mask token N(0, 0.02) (CroCo's scheme)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        w = self.patch_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.normal_(self.mask_token, std=0.02)

    def grid(self, image_size: tuple[int, int]) -> tuple[int, int]:
        p = self.config.patch_size
        return image_size[0] // p, image_size[1] // p

    def _rope(self, rope: RoPE2D, grid: tuple[int, int], keep: Tensor | None, device: torch.device) -> Rope:
        cos, sin = rope.tables(grid[0], grid[1], device)
        if keep is None:
            return cos[None, None], sin[None, None]
        return RoPE2D.gather(cos, keep), RoPE2D.gather(sin, keep)

    # --- encoder ---------------------------------------------------------------------------------
    def forward_encoder(self, images: Tensor, keep: Tensor | None = None,
                        taps: tuple[int, ...] = ()) -> tuple[Tensor, dict[int, Tensor]]:
        """Encode [B, 3, H, W] (only the tokens ``keep`` [B, n] when given).

        Returns the normalised final tokens [B, n, C] and the block outputs listed in ``taps``
        (the last block's output is the normalised one, as in CroCo).
        """
        x = self.patch_embed(images)
        if keep is not None:
            x = x.gather(1, keep[..., None].expand(-1, -1, x.shape[-1]))
        rope = self._rope(self.enc_rope, self.grid(images.shape[-2:]), keep, images.device)
        return _run_blocks(self.enc_blocks, self.enc_norm, x, taps, rope, recompute=self.activation_checkpointing)

    def encode(self, left: Tensor, right: Tensor, mask_left: Tensor | None = None,
               mask_right: Tensor | None = None, layers: Sequence[int] | None = None) -> PairEncoding:
        """Encode a pair with the shared encoder (one batch when both views keep as many tokens).

        ``layers``: the layers (indices into [encoder blocks..., decoder blocks...]) whose left-view
        outputs are kept in ``left_hooks``; default the DPT hooks.
        """
        check_pair(left, right, self.config.patch_size)  # whole patches; the DPT head checks 32 itself
        n = self.num_tokens(left.shape[-2:])
        keep_l = self._keep(mask_left, "mask_left", left.shape[0], n)
        keep_r = self._keep(mask_right, "mask_right", left.shape[0], n)
        taps = tuple(h for h in (self.hooks if layers is None else layers) if h < self.config.enc_depth)
        same = (keep_l is None and keep_r is None) or (
            keep_l is not None and keep_r is not None and keep_l.shape == keep_r.shape
        )
        if same:
            keep = None if keep_l is None else torch.cat((keep_l, keep_r))
            last, tapped = self.forward_encoder(torch.cat((left, right)), keep, taps)
            out_l, out_r = last.chunk(2)
            hooks_l = {i: t.chunk(2)[0] for i, t in tapped.items()}
        else:
            out_l, hooks_l = self.forward_encoder(left, keep_l, taps)
            out_r, _ = self.forward_encoder(right, keep_r)
        return PairEncoding(hooks_l, out_l, out_r, keep_l, keep_r, tuple(left.shape[-2:]))

    def num_tokens(self, image_size: tuple[int, int]) -> int:
        h, w = self.grid(image_size)
        return h * w

    @staticmethod
    def _keep(mask: Tensor | None, name: str, batch: int, n: int) -> Tensor | None:
        if mask is None:
            return None
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            raise InputError(f"{name} must be a bool tensor (True = masked)")
        if tuple(mask.shape) != (batch, n):
            raise InputError(f"{name} has shape {list(mask.shape)}, expected [{batch}, {n}] (batch, tokens)")
        return visible_index(mask)

    # --- decoder ---------------------------------------------------------------------------------
    def _full_tokens(self, tokens: Tensor, keep: Tensor | None, n: int, fill: Tensor) -> Tensor:
        """Scatter visible tokens [B, n_vis, C] into a full sequence [B, n, C] whose other slots are ``fill``."""
        if keep is None:
            return tokens
        full = fill.to(tokens.dtype).expand(tokens.shape[0], n, tokens.shape[-1])
        return full.scatter(1, keep[..., None].expand(-1, -1, tokens.shape[-1]), tokens)

    def _query(self, tokens: Tensor, keep: Tensor | None, n: int) -> Tensor:
        """decoder_embed of the visible tokens, learned mask token at masked slots."""
        return self._full_tokens(self.decoder_embed(tokens), keep, n, self.mask_token)

    def _memory(self, tokens: Tensor, keep: Tensor | None, n: int) -> Tensor:
        """decoder_embed of the other view with its masked slots zero in encoder space."""
        return self.decoder_embed(self._full_tokens(tokens, keep, n, tokens.new_zeros(())))

    def forward_decoder(self, query: Tensor, memory: Tensor, grid: tuple[int, int],
                        taps: tuple[int, ...] = ()) -> tuple[Tensor, dict[int, Tensor]]:
        """Run the decoder: query [B, N, D] attends to memory [B, N, D].

        Returns the normalised final tokens and the block outputs listed in ``taps`` (0-based
        decoder block indices; the last is the normalised output).
        """
        rope = self._rope(self.dec_rope, grid, None, query.device)
        return _run_blocks(self.dec_blocks, self.dec_norm, query, taps, memory, rope, rope,
                           recompute=self.activation_checkpointing)

    def _decode_layers(self, enc: PairEncoding, layers: Sequence[int],
                       right_pass: bool = False) -> tuple[Tensor, list[Tensor]]:
        """Decoder pass(es) on an encoded pair: the final normalised decoder tokens (left pass first, then
        the right pass when ``right_pass``) and the left view's tokens [B, N, C] after each of ``layers``
        (encoder layers from ``enc.left_hooks``, zeros at masked slots)."""
        grid = self.grid(enc.image_size)
        n = grid[0] * grid[1]
        batch = enc.left.shape[0]
        query = self._query(enc.left, enc.keep_left, n)
        memory = self._memory(enc.right, enc.keep_right, n)
        if right_pass:
            query = torch.cat((query, self._query(enc.right, enc.keep_right, n)))
            memory = torch.cat((memory, self._memory(enc.left, enc.keep_left, n)))
        enc_depth = self.config.enc_depth
        taps = tuple(h - enc_depth for h in layers if h >= enc_depth)
        final, tapped = self.forward_decoder(query, memory, grid, taps)
        tokens = []
        for h in layers:
            if h < enc_depth:
                t = enc.left_hooks[h]
                tokens.append(self._full_tokens(t, enc.keep_left, n, t.new_zeros(())))
            else:
                tokens.append(tapped[h - enc_depth][:batch])
        return final, tokens

    def layer_indices(self, indices: int | Sequence[int] | None = None) -> tuple[int, ...]:
        """timm's ``indices`` convention over the concatenated [encoder blocks..., decoder blocks...]:
        None = every layer, an int n = the last n layers, a sequence = those layers (negative = from the end)."""
        depth = self.config.enc_depth + self.config.dec_depth
        if indices is None:
            return tuple(range(depth))
        if isinstance(indices, int):
            if not 0 < indices <= depth:
                raise InputError(f"indices={indices}: the network has {depth} layers (encoder + decoder)")
            return tuple(range(depth - indices, depth))
        layers = tuple(int(i) + depth if int(i) < 0 else int(i) for i in indices)
        if any(not 0 <= i < depth for i in layers):
            raise InputError(f"layer indices {list(indices)} out of range for {depth} layers (encoder + decoder)")
        return layers

    @overload
    def forward_intermediates(self, left: Tensor, right: Tensor, indices: int | Sequence[int] | None = ..., *,
                              mask_left: Tensor | None = ..., mask_right: Tensor | None = ...,
                              intermediates_only: Literal[False] = ...) -> tuple[Tensor, list[Tensor]]: ...
    @overload
    def forward_intermediates(self, left: Tensor, right: Tensor, indices: int | Sequence[int] | None = ..., *,
                              mask_left: Tensor | None = ..., mask_right: Tensor | None = ...,
                              intermediates_only: Literal[True]) -> list[Tensor]: ...
    def forward_intermediates(self, left: Tensor, right: Tensor, indices: int | Sequence[int] | None = None, *,
                              mask_left: Tensor | None = None, mask_right: Tensor | None = None,
                              intermediates_only: bool = False) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """The left view's tokens after selected layers, as timm's ``forward_intermediates`` (format NLC).

        Layers are indexed over [encoder blocks..., decoder blocks...], the numbering of ``dpt_hooks``
        (see :meth:`layer_indices` for ``indices``). Each intermediate is [B, N, C]; the last encoder and the
        last decoder layer's outputs are the normalised ones, as the DPT head sees them. With masks, the
        encoder layers hold zeros at the left view's masked slots. Returns the intermediates, or (final
        normalised decoder tokens [B, N, D], intermediates) unless ``intermediates_only``. The DPT head of
        :meth:`forward` reads ``forward_intermediates(left, right, self.hooks)``.
        """
        layers = self.layer_indices(indices)
        enc = self.encode(left, right, mask_left, mask_right, layers)
        final, tokens = self._decode_layers(enc, layers)
        return tokens if intermediates_only else (final, tokens)

    def decode(self, enc: PairEncoding, reconstruct: bool = False, right_pass: bool = False,
               disparity: bool = True) -> MaskedStereoOutput:
        """Decoder passes and heads on an encoded pair.

        The left pass (left queries, right memory) feeds the DPT head (unless ``disparity`` is False; it
        needs H and W multiples of 32) and, with ``reconstruct``, the left reconstruction; ``right_pass``
        adds the symmetric pass (batched with the left one) for the right reconstruction.
        """
        if disparity:
            _check_multiple(enc.image_size, SIZE_MULTIPLE)
        batch = enc.left.shape[0]
        final, tokens = self._decode_layers(enc, self.hooks if disparity else (), right_pass)
        recon_left = recon_right = None
        if reconstruct or right_pass:
            recon = self.recon_head(final)
            recon_left = recon[:batch] if reconstruct else None
            recon_right = recon[batch:] if right_pass else None
        if not disparity:
            return MaskedStereoOutput(None, None, recon_left, recon_right)
        out = self.head(tokens, enc.image_size)
        return MaskedStereoOutput(out[:, 0:1], out[:, 1:2], recon_left, recon_right)

    # --- public forwards -------------------------------------------------------------------------
    def forward(self, left: Tensor, right: Tensor) -> StereoOutput:
        """Disparity and confidence of the left view: [B, 3, H, W] x 2 -> 2 x [B, 1, H, W]."""
        check_pair(left, right)
        tokens = self.forward_intermediates(left, right, self.hooks, intermediates_only=True)
        out = self.head(tokens, (left.shape[-2], left.shape[-1]))
        return StereoOutput(out[:, 0:1], out[:, 1:2])

    def forward_masked(self, left: Tensor, right: Tensor, mask_left: Tensor,
                       mask_right: Tensor | None = None, disparity: bool | None = None) -> MaskedStereoOutput:
        """Masked forward (MaDis student / CroCo pretraining).

        Masked tokens are dropped before the encoder; the left decoder pass uses the mask token at the
        left's masked slots and zeros (in encoder space) at the right's masked slots of the memory.
        With ``mask_right`` a second pass reconstructs the right view. Encoder-layer DPT hooks see zeros
        at masked slots (MaDis taps decoder layers only).

        Any H and W that are multiples of the patch size are accepted (as CroCo's pretraining network does,
        e.g. 80x80). ``disparity``: run the DPT head (True: required, which needs multiples of 32), skip it
        (False), or None: run it when the size allows.
        """
        if mask_left is None:
            raise InputError("forward_masked needs mask_left (use forward for unmasked input)")
        enc = self.encode(left, right, mask_left, mask_right)
        if disparity is None:
            disparity = all(size % SIZE_MULTIPLE == 0 for size in enc.image_size)
        return self.decode(enc, reconstruct=True, right_pass=mask_right is not None, disparity=disparity)

    @contextmanager
    def capture_attention(self, fn: Callable[[str, Tensor], None]) -> Iterator[None]:
        """Within the block, every attention layer calls ``fn(layer_name, weights [B, heads, Nq, Nk])``."""
        layers = [(name, m) for name, m in self.named_modules() if isinstance(m, (Attention, CrossAttention))]
        for name, module in layers:
            module.hook = lambda w, _name=name: fn(_name, w)
        try:
            yield
        finally:
            for _, module in layers:
                module.hook = None
