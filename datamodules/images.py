"""User images for ``recon predict``: a folder or glob of PNG or JPEG images → views in the dataset's channel
convention."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from recon.errors import DataFileError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")  # what a folder given to predict is searched for

# grey images of more than 8 bits per pixel (16-bit PNG: "I;16" or "I"; "F" holds floats in [0, 255])
WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "F")

# a pixel of an image without alpha belongs to the object when some channel is darker than this
# (i.e. it is not the white studio background the dataset's objects are rendered on)
WHITE_THRESHOLD = 0.95


def find_images(pattern: str | os.PathLike[str]) -> list[Path]:
    """The image files named by ``pattern``: a folder (its ``.png``, ``.jpg`` and ``.jpeg`` files, sorted) or a glob
    such as ``'imgs/*.png'``.

    Raises ``FileNotFoundError`` naming the pattern when nothing matches.
    """
    path = Path(pattern)
    if path.is_file():  # a file named as it is, even with glob characters in its name (`[a].png`)
        return [path]
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    else:
        files = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
    if not files:
        raise FileNotFoundError(f"no images match {str(pattern)!r}: give a folder of .png or .jpg files, or a glob")
    return files


def output_names(files: list[Path]) -> list[str]:
    """A name per file for its outputs (``<name>.obj``, …): its stem, and for a later file with a stem already used
    (``chair.png`` beside ``chair.jpg``, or a glob over folders) ``<stem>-1``, ``<stem>-2``, … skipping the stems
    of the other files, so that no two files' outputs share a name."""
    stems = {file.stem for file in files}
    taken: set[str] = set()
    names = []
    for file in files:
        name, count = file.stem, 0
        while name in taken or (count and name in stems):
            count += 1
            name = f"{file.stem}-{count}"
        taken.add(name)
        names.append(name)
    return names


def view_from_image(image: Image.Image, image_size: int = 64) -> Tensor:
    """A PIL image of any size and mode → ``(4, S, S)`` float32 in [0, 1], NMR's convention.

    - Mask: the alpha channel when the image has one (RGBA, LA, or a palette with transparency); otherwise
      the pixels where some channel is below ``WHITE_THRESHOLD`` (0.95), i.e. not white background.
    - RGB: composited over white, then inverted (``1 − rgb``), as NMR stores its renders, so the background
      is 0 and the channels are premultiplied by the mask.
    - Non-square images are padded with background to a centred square; then all four channels are resized
      to ``S × S`` with antialiased bilinear filtering. Resizing the premultiplied channels (not straight
      colour) is what keeps dark fringes out of the edges.
    - The mask is divided by its maximum, as NMR normalises its alpha; an all-empty mask stays 0.

    The model was trained on objects centred and filling the frame the way the dataset's camera frames them
    (distance 2.732, 15° half field of view): crop user photos similarly for sensible meshes.
    """
    has_alpha = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    image, has_alpha = _reduced(image, has_alpha, image_size)
    if image.mode in WIDE_GREY_MODES:  # 16-bit (or 32-bit, float) grey, which convert("RGBA") would clip at 255
        grey = np.asarray(image, dtype=np.float32)
        grey = grey / (255.0 if image.mode == "F" or grey.max(initial=0) <= 255 else 65535.0)
        rgba = np.concatenate([np.repeat(grey.clip(0, 1)[..., None], 3, -1), np.ones_like(grey)[..., None]], -1)
    else:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
    rgb = rgba[..., :3]
    if has_alpha:
        mask = rgba[..., 3]
    else:
        mask = (rgb.min(axis=-1) < WHITE_THRESHOLD).astype(np.float32)
    inverted = (1.0 - rgb) * mask[..., None]  # = 1 − (rgb·mask + white·(1 − mask))
    view = torch.from_numpy(np.concatenate([inverted, mask[..., None]], axis=-1)).permute(2, 0, 1)
    height, width = view.shape[1:]
    side = max(height, width)
    top, left = (side - height) // 2, (side - width) // 2
    view = F.pad(view, (left, side - width - left, top, side - height - top))  # background is 0 everywhere
    if side != image_size:
        view = F.interpolate(view[None], size=(image_size, image_size), mode="bilinear", antialias=True)[0]
    view = view.clamp(0.0, 1.0)
    peak = view[3].max()
    if peak > 0:
        view[3] /= peak
    return view.contiguous()


def _reduced(image: Image.Image, has_alpha: bool, image_size: int) -> tuple[Image.Image, bool]:
    """A photo many times the model's input size, first shrunk by an integer factor (box filter) to 2-4× it, and
    whether it has alpha now: the float copies of a 12000² image took 10 GB. An image without alpha gets its mask
    (not white) as alpha first, at full size, and colours are averaged premultiplied by alpha, so that the result
    is the full-size one's, averaged."""
    factor = max(image.size) // (2 * image_size)
    if factor < 2 or image.mode in WIDE_GREY_MODES:
        return image, has_alpha
    image = image.convert("RGBA")
    if not has_alpha:
        mask = np.asarray(image)[..., :3].min(axis=-1) < WHITE_THRESHOLD * 255
        image.putalpha(Image.fromarray(mask.astype(np.uint8) * 255))
    return image.convert("RGBa").reduce(factor).convert("RGBA"), True


def unreadable(file: Path, image_size: int = 64) -> str | None:
    """Why ``file`` cannot be a model input, or None: PIL's reason when it cannot be read as an image (e.g. a
    truncated file or a text file named ``.png``; the file is decoded in full, since its header and checksums alone
    miss a damaged compressed stream), or an empty mask at ``image_size`` (nothing but transparent or white
    pixels: no object to reconstruct, whose mesh would mean nothing)."""
    try:
        with Image.open(file) as image:
            image.load()
            view = view_from_image(image, image_size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"cannot read it as an image ({error})"
    if not view[3].max() > 0:
        return ("no object in it: its mask is empty (every pixel transparent, or white where the image has no "
                "alpha)")
    return None


class ImageFolderDataset(Dataset):
    """Images named by a folder or glob, as model inputs.

    Items: ``{"images": (4, S, S) float32 in [0, 1] (see :func:`view_from_image`), "name": file stem}``; the
    default collate turns a batch into ``images (B, 4, S, S)`` and ``name`` a list of strings. Stems are made
    unique (:func:`output_names`: ``chair``, ``chair-1``), since outputs are written as ``<name>.obj``.

    Every file is checked when the dataset is made (:func:`unreadable`): one that is not an image, is truncated
    or damaged, or shows no object (an empty mask), is left out and listed in ``skipped`` as ``(file, reason)``,
    so that one bad file in a large folder does not stop the others. ``DataFileError`` when no file is usable.
    """

    def __init__(self, pattern: str | os.PathLike[str], image_size: int = 64) -> None:
        found = find_images(pattern)
        checked = [(file, unreadable(file, image_size)) for file in found]
        self.files = [file for file, reason in checked if reason is None]
        self.skipped = [(file, reason) for file, reason in checked if reason is not None]
        if not self.files:
            file, reason = self.skipped[0]
            more = f" (and the other {len(found) - 1})" if len(found) > 1 else ""
            raise DataFileError(f"no readable image matches {str(pattern)!r}: {file}: {reason}{more}")
        self.image_size = image_size
        self.names = output_names(self.files)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> dict[str, Tensor | str]:
        file = self.files[index]
        try:
            with Image.open(file) as image:
                view = view_from_image(image, self.image_size)
        except (OSError, SyntaxError) as error:  # PIL raises SyntaxError for some broken PNG chunks
            raise DataFileError(f"{file}: cannot read it as an image ({error})") from error
        return {"images": view, "name": self.names[index]}
