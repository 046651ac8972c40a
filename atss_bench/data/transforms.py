"""Detection transforms: maskrcnn-benchmark's shorter-side resize, horizontal flip, to tensor.

Boxes are float ``[K, 4]`` (x0, y0, x1, y1) in continuous pixel coordinates (a box covering pixels
0..9 is [0, 10]); torchvision's ``v2.functional`` transforms move them together with the image.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F


def get_resize_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """Resized ``(height, width)``: shorter side ``min_size``, longer side at most ``max_size``.

    maskrcnn-benchmark semantics: if the longer side would exceed ``max_size``, the shorter side
    becomes ``round(max_size * short / long)``; the longer side is then ``int(size * long / short)``
    (truncated). An image whose shorter side already has the target size is left as is.
    """
    short, long = min(height, width), max(height, width)
    size = min_size
    if long / short * size > max_size:
        size = int(round(max_size * short / long))
    if short == size:
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


class DetectionTransform:
    """Resize (a random choice among ``min_sizes`` per image), optional flip, PIL -> float tensor.

    Randomness comes from torch's global generator, which DataLoader seeds per worker.
    """

    def __init__(self, min_sizes: int | Sequence[int], max_size: int, flip_prob: float) -> None:
        self.min_sizes = [min_sizes] if isinstance(min_sizes, int) else list(min_sizes)
        if not self.min_sizes:
            raise ValueError("min_sizes must not be empty")
        self.max_size = max_size
        self.flip_prob = flip_prob

    def __call__(self, image: Image.Image,
                 boxes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """Returns (image [3, H, W] float in [0, 1], boxes [K, 4] in resized coords, flipped)."""
        min_size = self.min_sizes[0]
        if len(self.min_sizes) > 1:
            min_size = self.min_sizes[int(torch.randint(len(self.min_sizes), ()))]
        size = get_resize_size(image.height, image.width, min_size, self.max_size)
        box_tv = tv_tensors.BoundingBoxes(boxes, format="XYXY",
                                          canvas_size=(image.height, image.width))
        if size != (image.height, image.width):
            image, box_tv = F.resize(image, list(size)), F.resize(box_tv, list(size))
        flipped = self.flip_prob > 0 and float(torch.rand(())) < self.flip_prob
        if flipped:
            image, box_tv = F.horizontal_flip(image), F.horizontal_flip(box_tv)
        tensor = F.to_dtype(F.pil_to_tensor(image), torch.float32, scale=True)
        return tensor, box_tv.as_subclass(torch.Tensor), flipped


def map_boxes_to_original(boxes: torch.Tensor, size: tuple[int, int],
                          orig_size: tuple[int, int]) -> torch.Tensor:
    """Boxes from a resized image of ``size`` (h, w) back to the original ``orig_size`` (h, w)."""
    scale_x, scale_y = orig_size[1] / size[1], orig_size[0] / size[0]
    return boxes * boxes.new_tensor([scale_x, scale_y, scale_x, scale_y])
