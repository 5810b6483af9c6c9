"""MobileNetV2 ×1.0, the unit of the Mobile Efficiency Score's latency term (torchvision's layout,
written out because torchvision is not installed here: 3,504,872 parameters, 300.8 M MACs at 224)."""
from __future__ import annotations

import torch
import torch.nn as nn

from supernet.layers import fold_conv_bn


def _make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class ConvBNReLU(nn.Sequential):
    def __init__(self, in_chs: int, out_chs: int, kernel_size: int = 3, stride: int = 1, groups: int = 1):
        super().__init__(nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out_chs), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, in_chs: int, out_chs: int, stride: int, expand_ratio: int):
        super().__init__()
        hidden = int(round(in_chs * expand_ratio))
        self.use_res = stride == 1 and in_chs == out_chs
        layers = [ConvBNReLU(in_chs, hidden, 1)] if expand_ratio != 1 else []
        layers += [ConvBNReLU(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, out_chs, 1, bias=False), nn.BatchNorm2d(out_chs)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))  # t, c, n, s

    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0):
        super().__init__()
        in_chs = _make_divisible(32 * width_mult)
        self.last_chs = _make_divisible(1280 * max(1.0, width_mult))
        features = [ConvBNReLU(3, in_chs, stride=2)]
        for t, c, n, s in self.SETTINGS:
            out = _make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(in_chs, out, s if i == 0 else 1, t))
                in_chs = out
        features.append(ConvBNReLU(in_chs, self.last_chs, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(self.last_chs, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    @torch.no_grad()
    def fuse_bn(self) -> "MobileNetV2":
        """Fold every Conv2d -> BatchNorm2d pair (eval mode), as deployment does."""
        self.eval()
        for seq in [m for m in self.modules() if isinstance(m, nn.Sequential)]:
            mods = list(seq)
            for i in range(len(mods) - 1):
                if isinstance(mods[i], nn.Conv2d) and isinstance(mods[i + 1], nn.BatchNorm2d):
                    seq[i] = fold_conv_bn(mods[i], mods[i + 1])
                    seq[i + 1] = nn.Identity()
        return self

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def mobilenet_v2(num_classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(num_classes)
