"""Attention processors of the multi-view UNet (diffusers' swappable processor interface).

Both receive ``num_frames`` through ``cross_attention_kwargs``. Rows of a batch are object-major: for B objects
with F views each, row ``b * F + f`` is view f of object b.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _sdpa(attn, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Multi-head scaled dot-product attention on [N, L, heads * d] projections, returning [N, L, heads * d]."""
    batch = query.shape[0]
    head_dim = key.shape[-1] // attn.heads
    query = query.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    key = key.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    value = value.view(batch, -1, attn.heads, head_dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(query, key, value, dropout_p=0.0, is_causal=False)
    return out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim)


class MultiViewSelfAttnProcessor:
    """attn1: self-attention over all views of one object jointly ((B*F, L, C) -> (B, F*L, C)), as MVDream's 3-D
    transformer does. With ``num_frames=1`` it is ordinary per-image self-attention."""

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        if encoder_hidden_states is not None or attention_mask is not None:
            raise ValueError("the multi-view self-attention takes neither a context nor a mask")
        rows, tokens, channels = hidden_states.shape
        if rows % num_frames:
            raise ValueError(f"batch of {rows} rows is not a whole number of {num_frames}-view objects")
        grouped = hidden_states.reshape(rows // num_frames, num_frames * tokens, channels)
        if getattr(attn, "fused_projections", False):  # one matmul for q, k and v (Attention.fuse_projections)
            query, key, value = attn.to_qkv(grouped).chunk(3, dim=-1)
        else:
            query, key, value = attn.to_q(grouped), attn.to_k(grouped), attn.to_v(grouped)
        out = _sdpa(attn, query, key, value)
        out = attn.to_out[1](attn.to_out[0](out))
        return out.reshape(rows, tokens, -1)


class CrossAttnProcessor:
    """attn2: per-view cross-attention to the context.

    With a one-token context (the CLIP image embedding) the softmax over a single key is exactly 1, so every query
    receives ``to_out(to_v(context))``: that is computed directly, skipping q, k and the attention itself. Longer
    contexts take the full SDPA path (``exact_single_token=False`` forces it, for tests)."""

    def __init__(self, exact_single_token: bool = True):
        self.exact_single_token = exact_single_token

    def __call__(
        self,
        attn,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        num_frames: int = 1,
    ) -> torch.Tensor:
        if encoder_hidden_states is None:
            raise ValueError("cross-attention needs a context")
        if attention_mask is not None:
            raise ValueError("the multi-view UNet takes no attention mask")
        if self.exact_single_token and encoder_hidden_states.shape[1] == 1:
            out = attn.to_out[1](attn.to_out[0](attn.to_v(encoder_hidden_states)))
            return out.expand(-1, hidden_states.shape[1], -1)
        out = _sdpa(attn, attn.to_q(hidden_states), attn.to_k(encoder_hidden_states), attn.to_v(encoder_hidden_states))
        return attn.to_out[1](attn.to_out[0](out))
