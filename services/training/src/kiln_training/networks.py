"""The networks behind the templates; every one is TorchScript-scriptable and returns logits."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from kiln_training.export import PAD_ID


class SmallCNN(nn.Module):
    """Two conv blocks (``width``, ``2·width`` channels), 2×2 average pooling, linear head."""

    def __init__(self, channels: int, num_labels: int, width: int, dropout: float) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.ReLU(inplace=True),
            # ceil_mode keeps a 1-pixel side alive, so even tiny images pass.
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(inplace=True),
            # A 2×2 grid rather than one average keeps where strokes are (a 6 and a 9 differ
            # only by it) at the cost of 4× the head's inputs.
            nn.AdaptiveAvgPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(8 * width, num_labels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3×3 convs with batch norm and an identity (or 1×1) shortcut."""

    def __init__(self, inputs: int, outputs: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inputs, outputs, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(outputs)
        self.conv2 = nn.Conv2d(outputs, outputs, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(outputs)
        self.shortcut = nn.Sequential()
        if stride != 1 or inputs != outputs:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, outputs, 1, stride=stride, bias=False), nn.BatchNorm2d(outputs)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18's four stages of two basic blocks, widths ``w, 2w, 4w, 8w``; a 3×3 stem without
    max-pool (the CIFAR variant) so 8×8 images still reach the last stage."""

    def __init__(self, channels: int, num_labels: int, width: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        )
        stages: list[nn.Module] = []
        inputs = width
        for i, stride in enumerate([1, 2, 2, 2]):
            outputs = width * 2**i
            stages += [BasicBlock(inputs, outputs, stride), BasicBlock(outputs, outputs, 1)]
            inputs = outputs
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(inputs, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.stages(self.stem(x))), 1))


class MLP(nn.Module):
    """``layers`` hidden layers of ``hidden_size`` units (ReLU, dropout), then a linear head."""

    def __init__(
        self, features: int, num_labels: int, hidden_size: int, layers: int, dropout: float
    ) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        inputs = features
        for _ in range(layers):
            blocks += [nn.Linear(inputs, hidden_size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            inputs = hidden_size
        blocks.append(nn.Linear(inputs, num_labels))
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class EmbeddingBagClassifier(nn.Module):
    """Mean of token embeddings (padding id 0 ignored) and a linear head; input ``[N, L]``."""

    def __init__(self, buckets: int, num_labels: int, embed_dim: int) -> None:
        super().__init__()
        self.embedding = nn.EmbeddingBag(buckets, embed_dim, mode="mean", padding_idx=PAD_ID)
        self.fc = nn.Linear(embed_dim, num_labels)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.embedding(tokens))


def build_network(
    template: str, params: dict[str, Any], input_shape: list[int], num_labels: int
) -> nn.Module:
    """The network of ``template`` for inputs of ``input_shape`` (no batch dim) and labels."""
    if template == "image-cnn":
        return SmallCNN(input_shape[0], num_labels, params["width"], params["dropout"])
    if template == "image-resnet18":
        return ResNet18(input_shape[0], num_labels, params["width"])
    if template == "tabular-mlp":
        return MLP(
            input_shape[0], num_labels, params["hidden_size"], params["layers"], params["dropout"]
        )
    if template == "text-embeddingbag":
        return EmbeddingBagClassifier(params["buckets"], num_labels, params["embed_dim"])
    raise ValueError(f"no network for template {template!r}")
