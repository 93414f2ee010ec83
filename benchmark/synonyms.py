"""Does a language model already know the `rephrase` level's words? For each colour synonym and relation wording of
envs/clevr_language.py, the train word whose sentence embedding (mean-pooled last hidden states, as the prior's LLM
reads them) is nearest by cosine; chance is 1 in 5 colours and 1 in 4 relations.

    python -m benchmark.synonyms                                  # all-MiniLM-L6-v2 and its random twin
    python -m benchmark.synonyms --llms all-mpnet-base-v2,SmolLM2-135M
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from envs.clevr_language import COLOR_SYNONYMS, RELATION_PHRASES, RELATION_SYNONYMS  # noqa: E402
from finetune_prior import load_llm  # noqa: E402


@torch.no_grad()
def embed(llm, tokenizer, texts: list) -> torch.Tensor:
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    hidden = llm(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def nearest(llm, tokenizer, words: dict, sentence: str) -> tuple[int, int, list]:
    """(hits, total, [(synonym, nearest train word)]) for `words`: {train word: synonyms}; `sentence` frames each."""
    names = list(words)
    base = embed(
        llm, tokenizer, [sentence.format(w=w if words is COLOR_SYNONYMS else RELATION_PHRASES[w][0]) for w in names]
    )
    pairs = []
    for name in names:
        for synonym in words[name]:
            best = int((embed(llm, tokenizer, [sentence.format(w=synonym)]) @ base.T).argmax())
            pairs.append((synonym, names[best], names[best] == name))
    return sum(p[2] for p in pairs), len(pairs), pairs


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--llms", default="all-MiniLM-L6-v2,all-MiniLM-L6-v2-random")
    args = parser.parse_args()
    torch.manual_seed(0)
    print("| model | colour synonyms nearest their colour | relation wordings nearest their relation | misses |")
    print("|---|---|---|---|")
    for name in args.llms.split(","):
        llm, tokenizer, _ = load_llm(name, torch.float32)
        llm.eval()
        c_hits, c_n, c_pairs = nearest(llm, tokenizer, COLOR_SYNONYMS, "the {w} ball")
        r_hits, r_n, r_pairs = nearest(llm, tokenizer, RELATION_SYNONYMS, "the red ball {w} the blue ball")
        misses = ", ".join(f"{s} -> {w}" for s, w, ok in c_pairs + r_pairs if not ok)
        print(f"| {name} | {c_hits}/{c_n} (chance 2/10) | {r_hits}/{r_n} (chance 2/8) | {misses} |")


if __name__ == "__main__":
    main()
