"""README.md and docs/*.md: every relative link reaches a file or folder, every `#anchor` names a heading of
its page under GitHub's rule, README stays short and links every docs page."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))
README_LIMIT = 16_000  # characters

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"(`+).+?\1", re.S)
SCHEME = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*:")


def _split_fences(text: str) -> tuple[list[str], str]:
    """(heading texts, prose without fenced code blocks)."""
    headings, prose, fence = [], [], None
    for line in text.split("\n"):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")):
            fence = stripped[:3]
        elif fence is not None:
            if stripped.startswith(fence):
                fence = None
        else:
            prose.append(line)
            match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
            if match:
                headings.append(match.group(1))
    return headings, "\n".join(prose)


def github_anchor(heading: str) -> str:
    """GitHub's heading id: link text kept, lowercase, punctuation dropped, spaces → '-'."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = "".join(c for c in text if c.isalnum() or c in " -_")
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The ids GitHub gives the headings of a page; a repeated id gets -1, -2, ..."""
    seen: dict[str, int] = {}
    ids = set()
    for heading in _split_fences(path.read_text(encoding="utf-8"))[0]:
        slug = github_anchor(heading)
        ids.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return ids


def relative_links(path: Path) -> list[str]:
    """Link targets outside code, without http:, https:, mailto: and other schemes."""
    prose = INLINE_CODE.sub("", _split_fences(path.read_text(encoding="utf-8"))[1])
    return [t for t in LINK.findall(prose) if not SCHEME.match(t)]


def broken_links(path: Path) -> list[str]:
    problems = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            problems.append(f"{target}: no such file or folder")
        elif anchor and dest.suffix != ".md":
            problems.append(f"{target}: an anchor into a file that is not markdown")
        elif anchor and anchor not in anchors(dest):
            problems.append(f"{target}: no heading with anchor #{anchor} in {dest.name}")
    return problems


@pytest.mark.parametrize("heading, anchor", [
    ("What `make demo` does", "what-make-demo-does"),
    ("Distributed training (metric losses across all ranks)",
     "distributed-training-metric-losses-across-all-ranks"),
    ("Demo results (synthetic set, Market-1501 protocol)", "demo-results-synthetic-set-market-1501-protocol"),
    ("TransReID-style ViT", "transreid-style-vit"),
    ("Does bf16 cost accuracy?", "does-bf16-cost-accuracy"),
    ("A [linked](x.md) snake_case title", "a-linked-snake_case-title"),
])
def test_github_anchor_rule(heading, anchor):
    assert github_anchor(heading) == anchor


def test_checker_finds_broken_links_and_ignores_code(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## Part two\n\n## Part two\n", encoding="utf-8")
    (tmp_path / "images").mkdir()
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#part-two) [second](other.md#part-two-1) [self](#page) [folder](images/) "
        "[web](https://example.org/missing) [mail](mailto:a@b.c)\n\n"
        "[gone](missing.md) [bad anchor](other.md#part-three) ![picture](images/none.png)\n"
        "[self](#nowhere)\n\n"
        "`[in code](nothing.md)` and\n\n```\n[in a block](nothing.md)\n# not a heading\n```\n",
        encoding="utf-8")
    assert broken_links(page) == [
        "missing.md: no such file or folder",
        "other.md#part-three: no heading with anchor #part-three in other.md",
        "images/none.png: no such file or folder",
        "#nowhere: no heading with anchor #nowhere in page.md",
    ]
    assert "not-a-heading" not in anchors(page)


@pytest.mark.parametrize("page", [README, *DOCS], ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_anchors_resolve(page):
    problems = broken_links(page)
    assert not problems, f"{page.name}: " + "; ".join(problems)


def test_readme_is_short_and_links_every_docs_page():
    assert DOCS, "docs/*.md is empty"
    text = README.read_text(encoding="utf-8")
    assert len(text) < README_LIMIT, f"README.md has {len(text):,} characters: move reference to docs/"
    linked = {(README.parent / t.partition("#")[0]).resolve() for t in relative_links(README)}
    assert [p.name for p in DOCS if p.resolve() not in linked] == []
