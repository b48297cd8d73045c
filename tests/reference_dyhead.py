"""A literal, slow re-implementation of one DyHead block, written for the tests.

It follows the algorithm as written in the paper and the authors' code, one level, one branch,
one image and one output pixel at a time, in float64, and shares no code with ``dyhead_d2``: the
deformable convolution, GroupNorm, the attentions, the upsampling and the three ways of reading
the high branch's offset are all spelled out here.
"""

from __future__ import annotations

import math

import torch


def bilinear_at(img: torch.Tensor, y: float, x: float) -> torch.Tensor:
    """DCNv2's bilinear sample of (C, H, W) at real position (y, x); zero outside the image."""
    c, h, w = img.shape
    out = torch.zeros(c, dtype=img.dtype)
    if y <= -1 or y >= h or x <= -1 or x >= w:
        return out
    y0, x0 = math.floor(y), math.floor(x)
    ly, lx = y - y0, x - x0
    for yy, wy in ((y0, 1 - ly), (y0 + 1, ly)):
        for xx, wx in ((x0, 1 - lx), (x0 + 1, lx)):
            if 0 <= yy < h and 0 <= xx < w:
                out = out + wy * wx * img[:, yy, xx]
    return out


def deform_conv_one_image(img, offset, mask, weight, bias, stride):
    """Modulated deformable 3x3 conv, padding 1, for one image.

    img (C, H, W); offset (18, Ho, Wo), (dy, dx) of tap k at channels 2k, 2k+1; mask (9, Ho, Wo).
    """
    _, ho, wo = mask.shape
    cout = weight.shape[0]
    out = torch.zeros(cout, ho, wo, dtype=img.dtype)
    for i in range(ho):
        for j in range(wo):
            acc = torch.zeros(cout, dtype=img.dtype)
            for k in range(9):
                ki, kj = divmod(k, 3)
                y = i * stride - 1 + ki + float(offset[2 * k, i, j])
                x = j * stride - 1 + kj + float(offset[2 * k + 1, i, j])
                sample = bilinear_at(img, y, x) * float(mask[k, i, j])
                acc = acc + weight[:, :, ki, kj] @ sample
            out[:, i, j] = acc if bias is None else acc + bias
    return out


def group_norm(x, groups, weight, bias, eps=1e-5):
    """x (C, H, W)."""
    c = x.shape[0]
    g = x.reshape(groups, -1)
    mean = g.mean(dim=1, keepdim=True)
    var = ((g - mean) ** 2).mean(dim=1, keepdim=True)
    g = (g - mean) / torch.sqrt(var + eps)
    return g.reshape(x.shape) * weight.view(c, 1, 1) + bias.view(c, 1, 1)


def upsample_align_corners(x, size):
    """Bilinear resize of (C, h, w) to size (H, W) with align_corners=True, pixel by pixel."""
    c, h, w = x.shape
    big_h, big_w = size
    out = torch.zeros(c, big_h, big_w, dtype=x.dtype)
    for i in range(big_h):
        sy = i * (h - 1) / (big_h - 1) if big_h > 1 else 0.0
        y0 = min(int(math.floor(sy)), h - 1)
        y1 = min(y0 + 1, h - 1)
        ly = sy - y0
        for j in range(big_w):
            sx = j * (w - 1) / (big_w - 1) if big_w > 1 else 0.0
            x0 = min(int(math.floor(sx)), w - 1)
            x1 = min(x0 + 1, w - 1)
            lx = sx - x0
            out[:, i, j] = (
                (1 - ly) * (1 - lx) * x[:, y0, x0]
                + (1 - ly) * lx * x[:, y0, x1]
                + ly * (1 - lx) * x[:, y1, x0]
                + ly * lx * x[:, y1, x1]
            )
    return out


def conv3x3(x, weight, bias):
    """Plain 3x3 convolution, padding 1, of (C, H, W) by explicit sums over taps."""
    c, h, w = x.shape
    padded = torch.zeros(c, h + 2, w + 2, dtype=x.dtype)
    padded[:, 1:-1, 1:-1] = x
    out = bias.view(-1, 1, 1).expand(weight.shape[0], h, w).clone()
    for ki in range(3):
        for kj in range(3):
            patch = padded[:, ki : ki + h, kj : kj + w].reshape(c, -1)
            out = out + (weight[:, :, ki, kj] @ patch).view(-1, h, w)
    return out


def read_offset(t, h, w, mode, is_mask=False):
    """(C, H, W) -> (C, h, w) by explicit indexing, one value at a time."""
    if mode == "mmdet_main_slice":
        # mmcv's kernel walks the raw memory of the offset slice; the mask is a real top-left copy.
        mode = "topleft" if is_mask else "official"
    c, big_h, big_w = t.shape
    out = torch.zeros(c, h, w, dtype=t.dtype)
    for ch in range(c):
        for i in range(h):
            for j in range(w):
                if mode == "official":
                    # The kernel walks memory as if the map were (C, h, w).
                    flat = ch * h * w + i * w + j
                    src_c, rest = divmod(flat, big_h * big_w)
                    src_i, src_j = divmod(rest, big_w)
                elif mode == "topleft":
                    src_c, src_i, src_j = ch, i, j
                elif mode == "aligned":
                    src_c, src_i, src_j = ch, 2 * i, 2 * j
                else:
                    raise ValueError(mode)
                out[ch, i, j] = t[src_c, src_i, src_j]
    return out


def hsig(v):
    return min(max(v + 3.0, 0.0), 6.0) / 6.0


def reference_block(block, features, offset_mode):
    """Run ``block``'s parameters through the literal algorithm; a list of float64 tensors."""
    p = {k: v.detach().double() for k, v in block.state_dict().items()}
    groups = block.conv_mid.norm.num_groups
    feats = [f.detach().double() for f in features]
    num_levels = len(feats)
    outputs = []
    for level in range(num_levels):
        per_image = []
        for n in range(feats[level].shape[0]):
            x = feats[level][n]
            om = conv3x3(x, p["offset_conv.weight"], p["offset_conv.bias"])
            offset, mask = om[:18], torch.sigmoid(om[18:])
            branches = []

            def branch(name, inp, off, msk, stride):
                y = deform_conv_one_image(
                    inp, off, msk, p[f"{name}.conv.weight"], p.get(f"{name}.conv.bias"), stride
                )
                return group_norm(y, groups, p[f"{name}.norm.weight"], p[f"{name}.norm.bias"])

            branches.append(branch("conv_mid", x, offset, mask, 1))
            if level > 0:
                branches.append(branch("conv_low", feats[level - 1][n], offset, mask, 2))
            if level < num_levels - 1:
                coarse = feats[level + 1][n]
                h, w = coarse.shape[-2:]
                hi = branch(
                    "conv_high",
                    coarse,
                    read_offset(offset, h, w, offset_mode),
                    read_offset(mask, h, w, offset_mode, is_mask=True),
                    1,
                )
                branches.append(upsample_align_corners(hi, x.shape[-2:]))
            total = torch.zeros_like(branches[0])
            for f in branches:
                pooled = f.mean(dim=(1, 2))
                z = float(
                    p["scale_attn.conv.weight"].flatten() @ pooled + p["scale_attn.conv.bias"]
                )
                total = total + f * hsig(max(z, 0.0))
            fused = total / len(branches)
            # DyReLU
            pooled = fused.mean(dim=(1, 2))
            hidden = torch.relu(p["task_attn.fc1.weight"] @ pooled + p["task_attn.fc1.bias"])
            coef = p["task_attn.fc2.weight"] @ hidden + p["task_attn.fc2.bias"]
            coef = torch.tensor([hsig(float(v)) for v in coef], dtype=fused.dtype)
            c = fused.shape[0]
            a1 = (coef[:c] - 0.5) * 2 + 1
            b1 = coef[c : 2 * c] - 0.5
            a2 = (coef[2 * c : 3 * c] - 0.5) * 2
            b2 = coef[3 * c :] - 0.5
            a1, b1, a2, b2 = (t.view(c, 1, 1) for t in (a1, b1, a2, b2))
            per_image.append(torch.maximum(fused * a1 + b1, fused * a2 + b2))
        outputs.append(torch.stack(per_image))
    return outputs
