"""User images for ``recon predict``: a folder or glob of images (PNG, JPEG, WebP, TIFF, …) → views in the
dataset's channel convention."""

from __future__ import annotations

import glob
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps
from torch import Tensor
from torch.utils.data import Dataset

from recon.errors import DataFileError

# what a folder given to predict is searched for (a glob takes any file; PIL decides whether it is an image)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".jpe", ".jfif", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".tga",
                  ".ppm", ".pgm", ".pnm", ".avif")

# grey images of more than 8 bits per pixel (16-bit PNG: "I;16" or "I"; "F" holds floats in [0, 255])
WIDE_GREY_MODES = ("I", "I;16", "I;16B", "I;16L", "F")

# An image without a usable alpha channel (none, or every pixel opaque) is cut out against its background: the
# median colour of its border pixels. A pixel belongs to the object when some channel differs from that colour by
# more than BACKGROUND_TOLERANCE (on the dataset's white, as before: some channel below 0.95), which also keeps a
# JPEG's ringing out of the mask. At least BACKGROUND_BORDER of the border must be that colour, or the image has
# no plain background to cut the object out of.
BACKGROUND_TOLERANCE = 0.05
BACKGROUND_BORDER = 0.6  # an object may touch a side or two; a photo half wall, half clutter is no plain background

# A mask covering more of the frame than this has no background around the object: a photo without alpha whose
# object fills it, or one cropped to the object. The model's views show the whole object with a margin.
MAX_COVERAGE = 0.95


class NoObjectError(ValueError):
    """An image that can be read but shows no object the model can take: the message says why."""


def find_images(pattern: str | os.PathLike[str]) -> list[Path]:
    """The image files named by ``pattern``: a folder (its files with a suffix of ``IMAGE_SUFFIXES``, sorted) or a
    glob such as ``'imgs/*.png'``.

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
        raise FileNotFoundError(f"no images match {str(pattern)!r}: give a folder of images (.png, .jpg, .webp, "
                                f".tif, …), or a glob")
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

    - Orientation: a photo's EXIF orientation is applied first (a phone stores its pixels rotated).
    - Mask: the alpha channel when the image has one that is not opaque everywhere (RGBA, LA, a palette or a
      colour key with transparency); otherwise the pixels that differ from the background colour (the median of
      the border's pixels) by more than ``BACKGROUND_TOLERANCE`` in some channel. ``NoObjectError`` when such an
      image has no plain background (too little of its border is one colour), or the mask covers more than
      ``MAX_COVERAGE`` of the image (no background around the object).
    - RGB: composited over white, then inverted (``1 − rgb``), as NMR stores its renders, so the background
      is 0 and the channels are premultiplied by the mask.
    - Non-square images are padded with background to a centred square; then all four channels are resized
      to ``S × S`` with antialiased bilinear filtering. Resizing the premultiplied channels (not straight
      colour) is what keeps dark fringes out of the edges.
    - The mask is divided by its maximum, as NMR normalises its alpha; an all-empty mask stays 0.

    The model was trained on objects centred and filling the frame the way the dataset's camera frames them
    (distance 2.732, 15° half field of view): crop user photos similarly for sensible meshes.
    """
    if image.getexif().get(ORIENTATION, 1) != 1:
        image = ImageOps.exif_transpose(image)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info  # a palette's or a colour key
    image, has_alpha = _reduced(image, has_alpha, image_size)
    if image.mode in WIDE_GREY_MODES:  # 16-bit (or 32-bit, float) grey, which convert("RGBA") would clip at 255
        raw = np.asarray(image, dtype=np.float32)
        grey = raw / (255.0 if image.mode == "F" or raw.max(initial=0) <= 255 else 65535.0)
        key = image.info.get("transparency")
        alpha = (raw != key) if has_alpha and isinstance(key, int | float) else np.ones_like(grey, dtype=bool)
        rgba = np.concatenate([np.repeat(grey.clip(0, 1)[..., None], 3, -1), alpha[..., None]], -1, dtype=np.float32)
    else:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0  # (H, W, 4)
    rgb = rgba[..., :3]
    if has_alpha and rgba[..., 3].min(initial=1.0) < 1.0:
        mask = rgba[..., 3]
    else:  # no alpha, or alpha opaque everywhere (as image editors often save): the background tells
        mask = background_mask(rgb).astype(np.float32)
    coverage = float(mask.mean()) if mask.size else 0.0
    if coverage > MAX_COVERAGE:
        raise NoObjectError(f"its mask covers {coverage:.0%} of the image, so there is no background around the "
                            "object: give a PNG whose alpha cuts the object out, or a photo with a margin of plain "
                            "background")
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


ORIENTATION = 0x0112  # the EXIF tag


def background_mask(rgb: np.ndarray) -> np.ndarray:
    """Where ``rgb`` (H, W, 3; floats in [0, 1], or uint8) is not its background: some channel differs from the
    median colour of the border pixels by more than ``BACKGROUND_TOLERANCE``. ``NoObjectError`` when less than
    ``BACKGROUND_BORDER`` of the border is within that tolerance of it (a photo with no plain background)."""
    scale = 255.0 if rgb.dtype == np.uint8 else 1.0
    rgb = rgb.astype(np.float32) / scale
    border = np.concatenate([rgb[0], rgb[-1], rgb[1:-1, 0], rgb[1:-1, -1]])
    background = np.median(border, axis=0)
    plain = float((np.abs(border - background).max(axis=-1) <= BACKGROUND_TOLERANCE).mean())
    if plain < BACKGROUND_BORDER:
        raise NoObjectError(f"it has no alpha and no plain background (only {plain:.0%} of its border is one colour): "
                            "give a PNG whose alpha cuts the object out, or a photo on a plain background")
    return np.abs(rgb - background).max(axis=-1) > BACKGROUND_TOLERANCE


def _reduced(image: Image.Image, has_alpha: bool, image_size: int) -> tuple[Image.Image, bool]:
    """A photo many times the model's input size, first shrunk by an integer factor (box filter) to 2-4× it, and
    whether it has alpha now: the float copies of a 12000² image took 10 GB. An image without alpha gets its mask
    (not white) as alpha first, at full size, and colours are averaged premultiplied by alpha, so that the result
    is the full-size one's, averaged."""
    factor = max(image.size) // (2 * image_size)
    if factor < 2 or image.mode in WIDE_GREY_MODES:
        return image, has_alpha
    image = image.convert("RGBA")
    if not has_alpha or np.asarray(image.getchannel("A")).min() == 255:
        image.putalpha(Image.fromarray(background_mask(np.asarray(image)[..., :3]).astype(np.uint8) * 255))
    return image.convert("RGBa").reduce(factor).convert("RGBA"), True


def unreadable(file: Path, image_size: int = 64) -> str | None:
    """Why ``file`` cannot be a model input, or None: PIL's reason when it cannot be read as an image (e.g. a
    truncated file or a text file named ``.png``; the file is decoded in full, since its header and checksums alone
    miss a damaged compressed stream), or no object to reconstruct, whose mesh would mean nothing: an empty mask at
    ``image_size`` (nothing but transparent or background pixels), or a :class:`NoObjectError` of
    :func:`view_from_image` (no plain background, a mask filling the image)."""
    try:
        with Image.open(file) as image:
            image.load()
            view = view_from_image(image, image_size)
    except NoObjectError as error:
        return f"no object to cut out: {error}"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        return f"cannot read it as an image ({error})"
    if not view[3].max() > 0:
        return ("no object in it: its mask is empty (every pixel transparent, or, where the image has no alpha, "
                "the colour of its background)")
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
