"""Image folders listed and checked before any trial reads them (docs/architecture.md, "Data").

``FolderWalk`` lists image files in torchvision ImageFolder's order, entering each real folder once: a
symlink loop or a second way into a folder is refused naming the link, and two links to one file too,
so no file is counted twice. ``check_images`` then reads every file's header and end (not its pixels):
an empty, unreadable, cut-short or over-``max_image_pixels`` file stops the sweep before Ray starts, in
one line. Why a scan and not skip-and-count at load time (measured on 3,000 ImageNet-sized JPEGs, 2 shared
CPUs): a header and an end cost 30-95 us a file (PIL's open alone 80-240 us in the same runs, a decode
~1.7 ms), 40-120 s for ImageNet's 1.28 M files, once: a clean list is remembered by its paths, sizes and
mtimes, and a later start pays one stat a file (5-8 us: 6-10 s). A bad file met in a trial costs that
trial's epoch, and every other trial's, and skip-and-count would add per-trial bookkeeping to every
loader. What it cannot see: damage inside the compressed data of a file whose header and end are whole;
the decoders name such a file in one line when they meet it, and a sweep whose every trial errored exits
3. ``python -m tuner.core.data.image_files DIR`` lists every file the check refuses.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import struct
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Sequence, Tuple

from tuner.core.files import default_cache_dir

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "TORCHVISION_SUFFIXES", "FolderWalk", "check_images", "header_size", "pil_image",
           "pixel_refusal"]

DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # PIL's own default (Image.MAX_IMAGE_PIXELS): ~9459 x 9459, 268 MB decoded
IMG_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # torchvision's IMG_EXTENSIONS
TORCHVISION_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif"}  # the streamed path decodes these with torchvision.io
_TORCHVISION_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "GIF")  # what torchvision.io decodes, by content
_ENDS = {"JPEG": b"\xff\xd9", "MPO": b"\xff\xd9", "PNG": b"IEND\xaeB`\x82"}  # a whole file ends in these
_HEAD, _TAIL = 8192, 64  # bytes read from each end of a file
_CHECK_VERSION = 1  # bump when check_file refuses more, so lists found whole before are checked again
_SOF = {*range(0xC0, 0xD0)} - {0xC4, 0xC8, 0xCC}  # JPEG start-of-frame markers (not DHT, JPG, DAC)


def pil_image() -> Any:
    """``PIL.Image`` with its own pixel limit off: ``max_image_pixels``, checked from the header, is the only one."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = None
    return Image


def pixel_refusal(width: int, height: int, limit: int) -> Optional[str]:
    """Why an image of this size is refused (the words after its path), or None within ``limit``."""
    if width * height <= limit:
        return None
    return (f"is {width} x {height} = {width * height:,} pixels, over max_image_pixels {limit:,} "
            f"(to read it: --set max_image_pixels={width * height})")


def header_size(head: bytes) -> Optional[Tuple[str, int, int]]:
    """(format, width, height) of a JPEG, PNG, GIF or WebP file from its first bytes, in microseconds (PIL's open
    takes ~60 us); None for another format or a header past ``head``."""
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return ("PNG", *struct.unpack(">II", head[16:24]))
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return ("GIF", *struct.unpack("<HH", head[6:10]))
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and len(head) >= 30:
        kind = head[12:16]
        if kind == b"VP8X":
            return "WEBP", 1 + int.from_bytes(head[24:27], "little"), 1 + int.from_bytes(head[27:30], "little")
        if kind == b"VP8L":
            bits = int.from_bytes(head[21:25], "little")
            return "WEBP", 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
        if kind == b"VP8 ":
            w, h = struct.unpack("<HH", head[26:30])
            return "WEBP", w & 0x3FFF, h & 0x3FFF
        return None
    if head[:2] != b"\xff\xd8":
        return None
    i = 2
    while i + 9 <= len(head):  # walk the marker segments to the frame header
        if head[i] != 0xFF:
            return None
        marker = head[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
        elif marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            i += 2
        elif marker in _SOF:
            h, w = struct.unpack(">HH", head[i + 5 : i + 9])
            return "JPEG", w, h
        else:
            i += 2 + int.from_bytes(head[i + 2 : i + 4], "big")
    return None


class FolderWalk:
    """Lists the image files of one data set's folders; each real folder is entered once and each file listed
    once, whatever links lead there (os.walk with followlinks, as torchvision's ImageFolder walks, loops)."""

    def __init__(self) -> None:
        self._folders: Dict[Tuple[int, int], str] = {}  # (device, inode) of each folder entered -> its path
        self._links: Dict[str, str] = {}  # image path that is a symlink -> the file it resolves to

    def enter(self, path: str) -> None:
        """Mark folder ``path`` listed; a second way into one folder (a loop, two links) is refused naming it."""
        st = os.stat(path)
        first = self._folders.setdefault((st.st_dev, st.st_ino), path)
        if first != path:
            raise ValueError(f"data_dir: {path} leads to {os.path.realpath(path)}, listed already as {first} (a symlink "
                             "loop, or two ways into one folder); each folder is listed once: remove the link")

    def images(self, top: str) -> List[str]:
        """Image files under folder ``top`` (by suffix, as torchvision's ImageFolder): folders in path order,
        files by name in each."""
        groups, stack = [], [top]
        while stack:
            folder = stack.pop()
            self.enter(folder)
            try:
                with os.scandir(folder) as it:
                    entries = sorted(it, key=lambda e: e.name)
            except OSError as e:
                raise ValueError(f"data_dir: cannot list {folder} ({e.strerror})") from None
            names, below = [], []
            for e in entries:
                if e.is_dir():
                    below.append(e.path)
                elif e.name.lower().endswith(IMG_SUFFIXES):
                    names.append(e.name)
                    if e.is_symlink():
                        self._links[e.path] = os.path.realpath(e.path)
            groups.append((folder, names))
            stack.extend(reversed(below))
        return [os.path.join(folder, name) for folder, names in sorted(groups) for name in names]

    def check_once(self, paths: Sequence[str]) -> None:
        """Refuse, naming both, a file listed twice: two links to it, or a link beside the file itself."""
        if not self._links:
            return
        targets: Dict[str, str] = {}
        for link, target in self._links.items():
            if targets.setdefault(target, link) != link:
                raise ValueError(f"data_dir: {link} and {targets[target]} are links to one file, {target}; "
                                 "each image is listed once: remove one")
        real: Dict[str, str] = {}
        for p in paths:
            if p in self._links:
                continue
            folder, name = os.path.split(p)
            if folder not in real:
                real[folder] = os.path.realpath(folder)
            link = targets.get(os.path.join(real[folder], name))
            if link is not None:
                raise ValueError(f"data_dir: {link} is a link to {p}, listed already; each image is listed once: "
                                 "remove the link")


def check_file(path: str, size: int, max_pixels: int, streamed: bool) -> Optional[str]:
    """Why no trial could read image file ``path`` (the words after its path), or None: read from its header and
    its last bytes, decoded only where its end marker is missing (to tell a cut-short file from trailing data)."""
    if size == 0:
        return "is empty"
    try:
        with open(path, "rb") as f:
            found = header_size(f.read(_HEAD))
            if found is None:  # another format, or a header past the first bytes: PIL reads it
                f.seek(0)
                with pil_image().open(f) as im:
                    found = (im.format, *im.size)
            fmt, width, height = found
            why = pixel_refusal(width, height, max_pixels)
            if why:
                return why
            suffix = os.path.splitext(path)[1].lower()
            if streamed and suffix in TORCHVISION_SUFFIXES and fmt not in _TORCHVISION_FORMATS:
                return f"is a {fmt} file named {suffix}, which the streamed decoder reads only as JPEG, PNG, WebP or GIF"
            end = _ENDS.get(fmt)
            if end is not None:
                f.seek(max(0, size - _TAIL))
                if end not in f.read():
                    f.seek(0)
                    try:
                        with pil_image().open(f) as im:
                            im.load()  # trailing bytes after a whole image decode; a cut-short file raises here
                    except Exception as e:
                        return f"is cut short (no {fmt} end marker, and it does not decode: {_first_line(e)})"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError ... : all mean "not a readable image"
        if type(e).__name__ == "UnidentifiedImageError":
            return "is in no image format PIL or torchvision reads"
        return f"cannot be read as an image ({_first_line(e)})"
    return None


def _first_line(e: Exception) -> str:
    """An exception's first line, bounded: what a one-line refusal quotes of it."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def check_images(paths: Sequence[str], root: str, max_pixels: int, streamed: bool) -> None:
    """Refuse in one line a list of image files that holds one no trial could read (``check_file``); a list
    found whole is remembered in the cache folder by its paths, sizes and mtimes, and not read again."""
    bad: List[Tuple[str, str]] = []
    sizes: List[Tuple[str, int]] = []
    key = hashlib.blake2b(repr((_CHECK_VERSION, max_pixels, streamed)).encode(), digest_size=16)
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as e:
            bad.append((p, f"cannot be read ({e.strerror})"))
            continue
        key.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        sizes.append((p, st.st_size))
    mark = default_cache_dir() / "image-checks" / key.hexdigest()
    if not bad and mark.is_file():
        return
    if len(sizes) >= 20_000:
        print(f"checking {len(sizes):,} image files of {root} (headers and ends; once for these files)", flush=True)
    bad += _check_all(sizes, max_pixels, streamed)
    if bad:
        path, why = min(bad)
        more = "" if len(bad) == 1 else f" (and {len(bad) - 1:,} more)"
        command = f"python -m tuner.core.data.image_files {shlex.quote(root)}" + (" --stream" if streamed else "") + \
            (f" --max-image-pixels {max_pixels}" if max_pixels != DEFAULT_MAX_IMAGE_PIXELS else "")
        raise ValueError(f"data_dir: {path} {why}{more}; {len(bad):,} of {len(paths):,} image files cannot be used: "
                         f"fix or remove them (list them: {command})")
    try:
        mark.parent.mkdir(parents=True, exist_ok=True)
        mark.touch()
    except OSError:
        pass  # only a cache: a full or read-only disk costs the next start the check again


def _check_all(files: List[Tuple[str, int]], max_pixels: int, streamed: bool) -> List[Tuple[str, str]]:
    """``(path, why)`` of each file ``check_file`` refuses, in list order. Threads (half the CPUs, at most 4) overlap
    a cold disk's reads; on files in the page cache they only contend for the GIL (2 threads on this 2-CPU
    machine took 1.7-2.7x as long as one), so a machine of 2 or 3 CPUs checks in one."""
    def one(item: Tuple[str, int]) -> Optional[str]:
        return check_file(item[0], item[1], max_pixels, streamed)

    threads = min(4, (os.cpu_count() or 1) // 2)
    if threads < 2 or len(files) < 2000:
        whys = list(map(one, files))
    else:
        with ThreadPoolExecutor(threads) as pool:
            whys = list(pool.map(one, files, chunksize=256))
    return [(p, why) for (p, _), why in zip(files, whys) if why is not None]


def main(argv: Optional[List[str]] = None) -> int:
    """List every image file under a folder that the sweep's check refuses, one a line; exit 1 if any."""
    p = argparse.ArgumentParser(prog="python -m tuner.core.data.image_files", description=main.__doc__)
    p.add_argument("folder")
    p.add_argument("--max-image-pixels", type=int, default=DEFAULT_MAX_IMAGE_PIXELS)
    p.add_argument("--stream", action="store_true", help="check as the streamed path reads (torchvision's decoders)")
    args = p.parse_args(argv)
    try:
        walk = FolderWalk()
        paths = walk.images(os.path.abspath(args.folder))
        walk.check_once(paths)
        sizes = [(f, os.stat(f).st_size) for f in paths if os.path.exists(f)]
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    bad = [(f, "cannot be read (no such file)") for f in paths if not os.path.exists(f)]
    bad += _check_all(sizes, args.max_image_pixels, args.stream)
    for path, why in bad:
        print(f"{path} {why}")
    print(f"{len(bad):,} of {len(paths):,} image files cannot be used", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
