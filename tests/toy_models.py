"""Tiny networks that exercise the coupling patterns compaction must respect."""
import torch
from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, c_in=3, n=10, w=16):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(c_in, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * w, n)

    def forward(self, x):
        return self.fc(self.features(x))


class ResidualNet(nn.Module):
    def __init__(self, n=10, w=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(),
                               nn.Conv2d(w, w, 3, padding=1, bias=False), nn.BatchNorm2d(w))
        self.b = nn.Sequential(nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.Hardswish(),
                               nn.Conv2d(2 * w, w, 1, bias=False), nn.BatchNorm2d(w))
        self.head = nn.Linear(w, n)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.a(x))
        x = torch.relu(x + self.b(x))
        return self.head(x.mean((2, 3)))


class ConcatDepthwiseNet(nn.Module):
    """Concat of two branches, a depthwise conv, sigmoid after BN (act(0) != 0), flatten into a linear."""

    def __init__(self, n=10, w=8):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.SiLU())
        self.b2 = nn.Sequential(nn.Conv2d(3, 2 * w, 1), nn.BatchNorm2d(2 * w), nn.Sigmoid())
        self.dw = nn.Sequential(nn.Conv2d(3 * w, 3 * w, 3, padding=1, groups=3 * w, bias=False),
                                nn.BatchNorm2d(3 * w), nn.ReLU6())
        self.pw = nn.Sequential(nn.Conv2d(3 * w, 2 * w, 1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(2 * w * 4, n)

    def forward(self, x):
        x = torch.cat([self.b1(x), self.b2(x)], 1)
        x = self.pw(self.dw(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class GroupedNet(nn.Module):
    """ResNeXt/RegNet-style bottleneck: 1x1 -> grouped 3x3 (groups=4) -> SE-free 1x1, residual add."""

    def __init__(self, n=10, w=16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.c = nn.Sequential(nn.Conv2d(w, w, 1, bias=False), nn.BatchNorm2d(w))
        self.fc = nn.Linear(w, n)

    def forward(self, x):
        x = self.stem(x)
        x = torch.relu(x + self.c(self.b(self.a(x))))
        return self.fc(x.mean((2, 3)))


class LayerNormNet(nn.Module):
    """ConvNeXt-style: LayerNorm over channels (channels-last) on the trunk, an MLP that widens 4x."""

    def __init__(self, n=10, w=8):
        super().__init__()
        self.stem = nn.Conv2d(3, w, 3, padding=1)
        self.norm = nn.LayerNorm(w)
        self.up = nn.Linear(w, 4 * w)
        self.down = nn.Linear(4 * w, w)
        self.fc = nn.Linear(w, n)

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)
        x = x + self.down(nn.functional.gelu(self.up(self.norm(x))))
        return self.fc(x.mean((1, 2)))


class GhostNet(nn.Module):
    """GhostNet-style block: a conv's output concatenated with a depthwise copy of itself, added to a residual."""

    def __init__(self, n=10, w=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.primary = nn.Sequential(nn.Conv2d(2 * w, w, 1, bias=False), nn.BatchNorm2d(w))
        self.cheap = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, groups=w, bias=False), nn.BatchNorm2d(w))
        self.head = nn.Sequential(nn.Conv2d(2 * w, 4 * w, 1), nn.ReLU())
        self.fc = nn.Linear(4 * w, n)

    def forward(self, x):
        x = self.stem(x)
        y = self.primary(x)
        x = x + torch.cat([y, self.cheap(y)], 1)
        return self.fc(self.head(x).mean((2, 3)))


class GhostSENet(nn.Module):
    """GhostNet bottleneck (timm): ghost module -> strided depthwise -> squeeze-excitation -> ghost module,
    added to a conv shortcut. Torch-Pruning roots two groups at layers whose channels j and j + C/2 are
    copies (SE expand, the shortcut conv); the graph must re-root them at the cheap depthwise convs."""

    def __init__(self, n=10, w=6):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.p1 = nn.Sequential(nn.Conv2d(8, w, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.c1 = nn.Sequential(nn.Conv2d(w, w, 3, padding=1, groups=w, bias=False), nn.BatchNorm2d(w), nn.ReLU())
        self.dw = nn.Sequential(nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1, groups=2 * w, bias=False),
                                nn.BatchNorm2d(2 * w))
        self.reduce = nn.Conv2d(2 * w, 4, 1)
        self.expand = nn.Conv2d(4, 2 * w, 1)
        self.p2 = nn.Sequential(nn.Conv2d(2 * w, 5, 1, bias=False), nn.BatchNorm2d(5))
        self.c2 = nn.Sequential(nn.Conv2d(5, 5, 3, padding=1, groups=5, bias=False), nn.BatchNorm2d(5))
        self.short = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8, bias=False), nn.BatchNorm2d(8),
                                   nn.Conv2d(8, 10, 1, bias=False), nn.BatchNorm2d(10))
        self.fc = nn.Linear(10, n)

    def forward(self, x):
        x = self.stem(x)
        y = self.p1(x)
        z = self.dw(torch.cat([y, self.c1(y)], 1))
        z = z * torch.sigmoid(self.expand(torch.relu(self.reduce(z.mean((2, 3), keepdim=True)))))
        u = self.p2(z)
        out = torch.cat([u, self.c2(u)], 1) + self.short(x)
        return self.fc(out.mean((2, 3)))


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics so that masking and compaction are really exercised."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(c, generator=g) - 0.5)
    return model.eval()


class TinySegmenter(nn.Module):
    """Encoder-decoder with a skip, {"out": N x classes x H x W} like torchvision's segmenters."""

    def __init__(self, num_classes=4, w=64):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.enc2 = nn.Sequential(nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), nn.BatchNorm2d(2 * w), nn.ReLU())
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = nn.Sequential(nn.Conv2d(3 * w, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU())
        self.classifier = nn.Conv2d(w, num_classes, 1)

    def forward(self, x):
        a = self.enc1(x)
        return {"out": self.classifier(self.dec(torch.cat([a, self.up(self.enc2(a))], 1)))}
