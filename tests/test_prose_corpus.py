"""Corpus assets from Debian documentation packages: reST → prose, the .deb reader, the
checksum and the held-out split; the real ≥ 20 MB corpus (slow, downloads about 51 MB)."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import pytest

from minidistill import assets
from minidistill._prose import inline_text, rst_to_paragraphs
from minidistill.assets import AssetError, DebCorpusAsset, DebPackage
from minidistill.data import resolve_corpus
from minidistill.data.corpus import iter_documents

RST = """\
:orig_name: ignored field list entry with several words in it

The mmap module
===============

.. module:: mmap
   :synopsis: Interface to memory-mapped files.

Memory-mapped file objects behave like both :class:`bytearray` and like
:term:`file objects <file object>`; see ``help(mmap)`` and `the docs <https://example.org>`_ for more.

Here is an example of its use::

   import mmap
   with mmap.mmap(-1, 13) as mm:
       mm.write(b"Hello world!")

.. code-block:: c

   int main(void) { return 0; }

.. function:: flush([offset[, size]])

   Flushes changes made to the in-memory copy of a file back to disk, **without** waiting.

.. note::
   Avoid relying on the *exact* layout of the memory map between runs of a program.

.. This is a comment that is never prose
   and its continuation is dropped too.

+--------+-------+
| a cell | other |
+========+=======+

=====  =====
A      B
=====  =====

>>> mm.read(5)
b'Hello'

* A bullet item that is a full sentence of prose words.
* Short one.

Too short here.
"""


def test_rst_to_paragraphs_keeps_the_prose_and_nothing_else():
    got = rst_to_paragraphs(RST)
    assert got == [
        "ignored field list entry with several words in it",
        "Memory-mapped file objects behave like both bytearray and like file objects; see help(mmap) and the docs "
        "for more.",
        "Here is an example of its use:",
        "Flushes changes made to the in-memory copy of a file back to disk, without waiting.",
        "Avoid relying on the exact layout of the memory map between runs of a program.",
        "A bullet item that is a full sentence of prose words.",
    ]


@pytest.mark.parametrize("markup, text", [
    (":func:`~os.path.join`", "os.path.join"),
    (":ref:`the guide <label>`", "the guide"),
    ("`Python <https://python.org>`__", "Python"),
    ("``x = 1``", "x = 1"),
    ("see [#]_ and [1]_ notes", "see and notes"),
    ("*a* and **b**", "a and b"),
])
def test_inline_markup_reduced_to_text(markup, text):
    assert inline_text(markup) == text


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode()
    assert len(header) == 60
    return header + data + (b"\n" if len(data) % 2 else b"")


def _make_deb(path, pages: dict) -> bytes:
    """A minimal .deb (ar: debian-binary, control.tar.gz, data.tar.xz) holding ``pages`` as reST sources."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for rel, text in pages.items():
            data = text.encode()
            info = tarfile.TarInfo(f"./usr/share/doc/toy/_sources/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    deb = b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n") + _ar_member("control.tar.gz", b"x" * 7) \
        + _ar_member("data.tar.xz", buf.getvalue())
    path.write_bytes(deb)
    return deb


def _toy_asset(deb_bytes: bytes, skip=()) -> DebCorpusAsset:
    pkg = DebPackage(pool_path="pool/main/t/toy/toy-doc_1_all.deb", sha256=hashlib.sha256(deb_bytes).hexdigest(),
                     sha1=hashlib.sha1(deb_bytes).hexdigest(), sources_dir="./usr/share/doc/toy/_sources/",
                     label="toy-doc", skip_prefixes=skip)
    return DebCorpusAsset(packages=(pkg,), description="toy", held_out_every=3)


PAGES = {f"page{i}.rst.txt": f"Title {i}\n=======\n\nThis is page number {i} of a small toy manual here.\n"
         for i in range(12)}
PAGES["translations/it.rst.txt"] = "Questa pagina non deve essere letta dal lettore qui.\n"
PAGES["image.png"] = "not a page"


def test_deb_corpus_built_from_a_downloaded_package(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path / "home"))
    deb = _make_deb(tmp_path / "toy.deb", PAGES)
    asset = _toy_asset(deb, skip=("translations/",))
    monkeypatch.setattr(DebPackage, "urls", lambda self: [(tmp_path / "missing.deb").as_uri(),
                                                          (tmp_path / "toy.deb").as_uri()])
    monkeypatch.setitem(assets.ASSETS, "toy-docs", asset)
    folder = assets.path("toy-docs")
    rows = {}
    for split in ("train", "valid"):
        for line in (folder / f"{split}.jsonl").read_text().splitlines():
            row = json.loads(line)
            rows[row["source"]] = (split, row["text"])
    assert sorted(rows) == sorted(f"toy-doc:page{i}" for i in range(12))  # no translation, no image
    for source, (split, text) in rows.items():
        i = source.removeprefix("toy-doc:page")
        assert text == f"This is page number {i} of a small toy manual here."
        want = int(hashlib.sha1(source.encode()).hexdigest()[:8], 16) % 3 == 0
        assert (split == "valid") == want
    assert {s for s, _ in rows.values()} == {"train", "valid"}
    info = json.loads((folder / ".verified").read_text())
    assert info["pages"]["train"] + info["pages"]["valid"] == 12
    # the downloaded .deb is kept and used again without any download
    monkeypatch.setattr(DebPackage, "urls", lambda self: [])
    import shutil
    shutil.rmtree(folder)
    assert assets.path("toy-docs") == folder and (folder / "train.jsonl").is_file()


def test_deb_checksum_mismatch_is_refused_and_nothing_is_left(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path / "home"))
    deb = _make_deb(tmp_path / "toy.deb", PAGES)
    asset = _toy_asset(deb + b"tampered")
    monkeypatch.setattr(DebPackage, "urls", lambda self: [(tmp_path / "toy.deb").as_uri()])
    monkeypatch.setitem(assets.ASSETS, "toy-docs", asset)
    with pytest.raises(AssetError, match="checksum mismatch for toy-doc_1_all.deb"):
        assets.path("toy-docs")
    assert not (tmp_path / "home" / "toy-docs").exists()
    assert not list((tmp_path / "home" / "debs").iterdir())  # the bad file removed, no temporary left


def test_deb_download_failure_names_every_address(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path / "home"))
    asset = _toy_asset(b"whatever")
    monkeypatch.setattr(DebPackage, "urls", lambda self: [(tmp_path / "a.deb").as_uri(), (tmp_path / "b.deb").as_uri()])
    monkeypatch.setitem(assets.ASSETS, "toy-docs", asset)
    with pytest.raises(AssetError, match="could not download toy-doc_1_all.deb") as e:
        assets.path("toy-docs")
    assert "a.deb" in str(e.value) and "b.deb" in str(e.value) and "by hand" in str(e.value)


def test_named_corpus_spec_and_its_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path / "home"))
    deb = _make_deb(tmp_path / "toy.deb", PAGES)
    monkeypatch.setattr(DebPackage, "urls", lambda self: [(tmp_path / "toy.deb").as_uri()])
    monkeypatch.setitem(assets.ASSETS, "debian-docs", _toy_asset(deb, skip=("translations/",)))
    train, valid = resolve_corpus(["debian-docs", "debian-docs:valid"])
    assert train.name == "train.jsonl" and valid.name == "valid.jsonl"
    docs = list(iter_documents("debian-docs")) + list(iter_documents("debian-docs:valid"))
    assert len(docs) == 12
    with pytest.raises(Exception, match="splits train, valid, not 'test'"):
        resolve_corpus("debian-docs:test")


@pytest.mark.slow
def test_real_debian_docs_corpus_is_over_20_mb_of_prose():
    folder = assets.path("debian-docs")
    info = json.loads((folder / ".verified").read_text())
    text_bytes = 0
    pages = 0
    for split in ("train", "valid"):
        for line in (folder / f"{split}.jsonl").open(encoding="utf-8"):
            text_bytes += len(json.loads(line)["text"].encode())
            pages += 1
    assert pages == info["pages"]["train"] + info["pages"]["valid"] > 2500
    assert text_bytes > 20e6
    assert 40 < info["pages"]["valid"] < 150


def test_mlm_head_holds_out_a_named_corpus_s_valid_split(tmp_path, monkeypatch, tiny_teacher_dir, capsys):
    from minidistill.cli import main

    monkeypatch.setenv("MINIDISTILL_HOME", str(tmp_path / "home"))
    pages = {f"p{i}.rst.txt": f"Page {i}\n======\n\n" + " ".join(["a sentence of words about films"] * 8) + "\n"
             for i in range(30)}
    deb = _make_deb(tmp_path / "toy.deb", pages)
    monkeypatch.setattr(DebPackage, "urls", lambda self: [(tmp_path / "toy.deb").as_uri()])
    monkeypatch.setitem(assets.ASSETS, "debian-docs", _toy_asset(deb))
    out = tmp_path / "mlm"
    args = ["mlm-head", str(tiny_teacher_dir), "--steps", "2", "--seq-len", "16", "--batch-size", "4",
            "--backend", "numpy", "--cache-dir", str(tmp_path / "cache"), "--output-dir", str(out)]
    assert main([*args, "--corpus", "debian-docs"]) == 0
    assert json.loads((out / "metrics.json").read_text())["held_out"] == ["debian-docs:valid"]
    (tmp_path / "t.txt").write_text("some text of a few words here", encoding="utf-8")
    assert main([*args, "--corpus", str(tmp_path / "t.txt"), "--overwrite"]) == 2
    assert "--held-out is required" in capsys.readouterr().err
