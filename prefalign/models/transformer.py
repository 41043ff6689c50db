"""TinyTransformer: the tiny-transformer notebook's decoder-only model (d_model 128, 4 heads, 2 layers, feed-forward 256, block 64), over
characters or, as in the seed, GPT-2's BPE tokens."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CausalSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.n_heads = n_heads
        self.dropout = dropout

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, C // self.n_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float, norm_first: bool) -> None:
        super().__init__()
        self.attn = CausalSelfAttention(d_model, n_heads, dropout)
        self.ff = nn.Sequential(nn.Linear(d_model, d_ff), nn.ReLU(), nn.Linear(d_ff, d_model))
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(self, x: Tensor) -> Tensor:
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x)))
            return x + self.drop(self.ff(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x)))  # the notebook's nn.TransformerEncoderLayer (post-norm)
        return self.norm2(x + self.drop(self.ff(x)))


class TinyTransformer(nn.Module):
    """A decoder-only transformer over characters or BPE tokens: ``model(ids [B, T]) -> logits [B, T, vocab_size]``.

    The tiny-transformer notebook's sizes by default. Two deliberate differences from the notebook's ``nn.TransformerEncoder``: pre-norm
    (``norm_first``; the seed is post-norm, which trains worse at this size) and no dropout (the run is far
    from over-fitting 4.5M characters); both are options. Attention is PyTorch's fused causal
    ``scaled_dot_product_attention``.

    A weights file carries its tokenizer. With ``tokenizer="char"`` the vocabulary (the characters the ids stand
    for) is kept in the ``vocab`` buffer; ``vocab_size`` is the room for it (unused rows are never read: the
    language family slices the logits to the real characters). With a file-based tokenizer (``"gpt2"``: GPT-2's
    BPE, ``vocab_size`` at least 50257) the name is a constructor argument, so it is in the weights file's
    ``init_args``, and the sha256 of the BPE file the model was trained with is kept in the ``tokenizer_sha256``
    buffer (32 bytes, zero until the language family binds the data's tokenizer). See
    :mod:`prefalign.data.text.model_tokenizer`.

    Args:
        vocab_size: embedding rows; at least the number of distinct characters (char) or of BPE ids (gpt2: 50257).
        block_size: the longest context (characters or BPE tokens); generation crops to it.
        tokenizer: ``char`` or ``gpt2``.
    """

    def __init__(
        self,
        vocab_size: int = 96,
        d_model: int = 128,
        n_heads: int = 4,
        n_layers: int = 2,
        d_ff: int = 256,
        block_size: int = 64,
        dropout: float = 0.0,
        norm_first: bool = True,
        tokenizer: Literal["char", "gpt2"] = "char",
    ) -> None:
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} must be divisible by n_heads={n_heads}.")
        if tokenizer not in ("char", "gpt2"):
            raise ValueError(f"tokenizer must be char or gpt2, got {tokenizer!r}")
        self.init_args = dict(
            vocab_size=vocab_size,
            d_model=d_model,
            n_heads=n_heads,
            n_layers=n_layers,
            d_ff=d_ff,
            block_size=block_size,
            dropout=dropout,
            norm_first=norm_first,
        )
        if tokenizer != "char":
            # Recorded only when not the default: a char model's init_args (and so its weights file, and the
            # architecture check against older references, which have no such key) stay exactly as before.
            self.init_args["tokenizer"] = tokenizer
        self.tokenizer_name = tokenizer
        self.block_size = block_size
        self.token_emb = nn.Embedding(vocab_size, d_model)
        self.pos_emb = nn.Embedding(block_size, d_model)
        self.blocks = nn.ModuleList(Block(d_model, n_heads, d_ff, dropout, norm_first) for _ in range(n_layers))
        self.norm = nn.LayerNorm(d_model) if norm_first else nn.Identity()
        self.lm_head = nn.Linear(d_model, vocab_size)
        if tokenizer == "char":
            self.register_buffer("vocab", torch.full((vocab_size,), -1, dtype=torch.int32))
        else:
            self.register_buffer("tokenizer_sha256", torch.zeros(32, dtype=torch.uint8))
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, ids: Tensor) -> Tensor:
        T = ids.shape[1]
        if T > self.block_size:
            raise ValueError(f"a sequence of {T} tokens is longer than the model's block_size={self.block_size}.")
        x = self.token_emb(ids) + self.pos_emb(torch.arange(T, device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.norm(x))


__all__ = ["TinyTransformer"]
