"""A folder of images per class (torchvision ``ImageFolder`` layout), as DD-Ranking's ``image_path`` and most viewers
read it.

One subfolder per class; the class index is the position of the folder in sorted name order, so the exporter names
them ``00000_<class name>``, ``00001_<class name>``, ... Pixels are de-normalised: the set's encoding is undone (inverse
ZCA, then ``x * std + mean``), clamped to [0, 1] and written as 8-bit PNGs (grayscale or RGB). Importing encodes the
pixels with the dataset's encoding (mean/std, or the ZCA ddistill fits with ``--zca``). Soft labels and the learned
rate cannot live in a folder of images: they are reported, not silently dropped.
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from ..data.encoding import Encoding
from ..synset import SyntheticSet
from ._base import EXPORT_MARKER, EXPORTERS, IMPORTERS, ExportReport, Exporter, Foreign, Importer, ImportOptions, \
    InteropError, Target, build_set, check_export_record, class_major_order, encoding_sentence, export_record, \
    hard_labels, write_file, write_json_file

__all__ = ["PNGFolderExporter", "PNGFolderImporter", "class_folder_names"]

#: Files read as images (torchvision's ImageFolder extensions).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
_NUMBERED = re.compile(r"^(\d+)(?:_(.*))?$")


def safe_name(name: str) -> str:
    """A class name usable in a folder name on every platform (other characters become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", str(name)).strip("._") or "class"


def class_folder_names(num_classes: int, class_names: list[str] | tuple[str, ...] = ()) -> list[str]:
    """``00000_<name>``, ... zero-padded so that sorted name order is class order."""
    width = max(5, len(str(max(num_classes - 1, 0))))
    names = list(class_names)
    return [f"{c:0{width}d}" + (f"_{safe_name(names[c])}" if c < len(names) and names[c] != "" else "")
            for c in range(num_classes)]


@IMPORTERS.register("png")
class PNGFolderImporter(Importer):
    """An ImageFolder of 8-bit images (PNG, JPEG, ...)."""

    reads = "DIR/<class folder>/<image>.png: one folder per class, class index = sorted folder order"
    encoding = ("de-normalised [0, 255] pixels; encoded on import with the dataset's mean/std (or its ZCA with --zca); "
                "hard labels from the folders")

    def read(self, paths: list[Path], target: Target, options: ImportOptions) -> SyntheticSet:
        if len(paths) != 1 or not paths[0].is_dir():
            raise InteropError(f"png import reads one folder with a subfolder per class, got "
                               f"{', '.join(str(p) for p in paths)}")
        root = paths[0]
        check_export_record(root, target, self.name)
        info, k = target.info, int(target.info.num_classes)
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        if len(folders) != k:
            raise InteropError(f"{root} has {len(folders)} class folders but {info.name} has {k} classes (ImageFolder "
                               f"gives class indices by sorted folder name, so every class needs a folder)")
        _check_class_order([p.name for p in folders], list(info.class_names), root, info.name)
        c, h, w = target.shape
        mode = {1: "L", 3: "RGB"}.get(c)
        if mode is None:
            raise InteropError(f"{info.name} images have {c} channels; PNG import reads 1- or 3-channel datasets")
        images, labels, names = [], [], []
        for index, folder in enumerate(folders):
            files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not files:
                raise InteropError(f"class folder {folder.name} in {root} holds no images "
                                   f"({', '.join(IMAGE_EXTENSIONS)})")
            for path in files:
                images.append(_read_image(path, mode, (h, w), info.name))
                labels.append(index)
                names.append(f"{folder.name}/{path.name}")
        pixels = torch.stack(images)  # (N, C, H, W) uint8
        x = target.encoding.encode(pixels)
        y = torch.tensor(labels, dtype=torch.int64)
        files = {"images": root, "labels": root}
        extra = {"class_folders": [p.name for p in folders], "image_files": len(names)}
        assumed = ["class index = position of the class folder in sorted name order (torchvision ImageFolder)",
                   "pixels are 8-bit and de-normalised (0-255); they were encoded with the dataset's encoding on "
                   "import, so the images are the PNGs exactly, up to that encoding"]
        synset = build_set(self.name, Foreign(x, y, None, files), target, options, extra=extra, assumed=assumed)
        synset.meta["imported"]["files"] = {"folder": str(root)}
        synset.meta["imported"]["labels"] = "hard (class folders)"
        return synset


def _check_class_order(folders: list[str], class_names: list[str], root: Path, dataset: str) -> None:
    """Refuses folder names that contradict the sorted-order rule: numbered folders whose number is not their
    position, or folders named after the classes whose sorted order is not the class order."""
    numbered = [_NUMBERED.match(name) for name in folders]
    if all(numbered):
        for position, (name, match) in enumerate(zip(folders, numbered)):
            if int(match.group(1)) != position:  # type: ignore[union-attr]
                raise InteropError(f"class folder {name} in {root} sorts at position {position}: ImageFolder class "
                                   f"indices come from sorted folder order; number the folders 0..{len(folders) - 1} "
                                   f"with equal widths (00000_, 00001_, ...)")
            label = match.group(2)  # type: ignore[union-attr]
            if label and class_names and position < len(class_names) and \
                    safe_name(label) != safe_name(class_names[position]):
                raise InteropError(f"class folder {name} in {root} is class {position}, which {dataset} calls "
                                   f"'{class_names[position]}': wrong --dataset, or folders in another class order?")
        return
    if class_names and sorted(folders) == sorted(safe_name(n) for n in class_names) and \
            folders != [safe_name(n) for n in class_names]:
        raise InteropError(f"the class folders in {root} are named after the {dataset} classes but their sorted order "
                           f"is not the class order (ImageFolder indexes classes by sorted folder name); prefix them "
                           f"00000_, 00001_, ... in class order")


def _read_image(path: Path, mode: str, size: tuple[int, int], dataset: str) -> torch.Tensor:
    """One image file as (C, H, W) uint8, converted to the dataset's channels; never resized."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.size != (size[1], size[0]):
                raise InteropError(f"{path.parent.name}/{path.name} is {img.size[1]}x{img.size[0]} but {dataset} "
                                   f"images are {size[0]}x{size[1]} (images are not resized)")
            if img.mode not in ("L", "RGB", "P", "RGBA", "LA", "1"):
                raise InteropError(f"{path.parent.name}/{path.name} has PIL mode {img.mode}; PNG import reads 8-bit "
                                   f"grayscale or RGB images")
            arr = np.asarray(img.convert(mode), dtype=np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InteropError(f"{path} is not a readable image: {reason}") from None
    t = torch.from_numpy(arr.copy())
    return t.unsqueeze(0) if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


@EXPORTERS.register("png")
class PNGFolderExporter(Exporter):
    """An ImageFolder of 8-bit PNGs."""

    writes = "<class folder 00000_<name>>/00000.png ..., README.txt, ddistill_export.json"
    encoding = ("de-normalised pixels: inverse ZCA, then x * std + mean, clamped to [0, 1], rounded to 8 bits; "
                "soft labels filed under their argmax class")

    def fill(self, synset: SyntheticSet, folder: Path) -> ExportReport:
        from PIL import Image

        meta = synset.meta
        k = int(meta["num_classes"])
        c = int(synset.x.shape[1])
        mode = {1: "L", 3: "RGB"}.get(c)
        if mode is None:
            raise InteropError(f"png export writes 1- or 3-channel images; this set has {c} channels")
        order = class_major_order(synset)
        raw = Encoding.from_meta(meta["encoding"], synset.tensors).decode(synset.x)  # inverse ZCA, then mean/std
        clipped = float(((raw < 0) | (raw > 1)).float().mean())
        pixels = (raw[order].clamp(0, 1) * 255.0).round().to(torch.uint8)
        labels = hard_labels(synset)[order]
        folders = class_folder_names(k, meta.get("class_names") or ())
        for name in folders:
            (folder / name).mkdir()
        counters = [0] * k
        width = max(5, len(str(len(labels))))
        files = []
        for img, label in zip(pixels, labels.tolist()):
            arr = img.permute(1, 2, 0).contiguous().numpy()
            image = Image.fromarray(arr[:, :, 0] if mode == "L" else arr)  # uint8: mode L or RGB
            rel = f"{folders[label]}/{counters[label]:0{width}d}.png"
            counters[label] += 1
            write_file(folder / rel, lambda f, image=image: image.save(f, format="PNG"))
            files.append(rel)
        notes: list[str] = []
        empty = [folders[i] for i, n in enumerate(counters) if n == 0]
        if empty:
            notes.append(f"class folder(s) {', '.join(empty[:5])}{'...' if len(empty) > 5 else ''} are empty: the set "
                         f"has no images of those classes (torchvision's ImageFolder refuses empty class folders)")
        if meta.get("labels") == "soft":
            notes.append("the set has soft labels, which an image folder cannot hold: each image is filed under its "
                         "argmax class (export ddranking to keep them)")
        if "lr" in synset.tensors:
            notes.append(f"the learned lr ({float(synset.tensors['lr']):.6g}) is recorded in {EXPORT_MARKER} only; "
                         f"pass it with --lr when importing")
        if clipped > 0:
            notes.append(f"{clipped:.2%} of the de-normalised pixel values lay outside [0, 1] and were clamped")
        enc = meta["encoding"]
        record = export_record(synset, self.name, class_folders=folders, pixel_values_clamped=clipped,
                               files_per_class=counters)
        write_json_file(folder / EXPORT_MARKER, record)
        readme = [
            f"ImageFolder exported by ddistill {record['ddistill_version']} from a {meta['dataset']} set "
            f"({record['synthesizer']}): {len(files)} {mode} PNGs, {synset.x.shape[2]}x{synset.x.shape[3]}.",
            "",
            "One folder per class; the class index is the folder's position in sorted name order (torchvision "
            "ImageFolder, DD-Ranking image_path).",
            f"Pixels are de-normalised: the set's encoding ({encoding_sentence(enc, meta['dataset'])}) was undone, "
            f"values clamped to [0, 1] and rounded to 8 bits.",
            "To train on them, apply ToTensor and the dataset's Normalize (or its ZCA) again.",
            f"`ddistill import png <this folder> --dataset {meta['dataset']}"
            + (" --zca" if enc.get("zca") else "") + "` reads the folder back.",
        ]
        readme += [f"Note: {n}" for n in notes]
        write_file(folder / "README.txt", lambda f: f.write(("\n".join(readme) + "\n").encode()))
        return ExportReport(folder, [*files, "README.txt", EXPORT_MARKER], notes)
