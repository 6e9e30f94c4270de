"""README.md and docs/: every relative link and #anchor resolves inside the repository, and no tracked file
points to notes outside it (a reader of the repository must be able to follow every reference)."""
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINK = re.compile(r'(?<!!)\[[^\]]*\]\(([^)\s]+)\)')
FENCE = re.compile(r'```.*?```', re.S)


def doc_files():
    return [REPO / 'README.md'] + sorted((REPO / 'docs').glob('*.md'))


def github_anchor(heading: str) -> str:
    """GitHub's heading id: lower case, punctuation dropped (letters, digits, _ and - kept), spaces -> '-'."""
    return re.sub(r'[^\w\- ]', '', heading.strip().lower()).replace(' ', '-')


def anchors(markdown: Path) -> set:
    text = FENCE.sub('', markdown.read_text(encoding='utf-8'))
    return {github_anchor(line.lstrip('#')) for line in text.splitlines() if line.startswith('#')}


def broken_links(markdown: Path, root: Path = REPO) -> list:
    problems = []
    for target in LINK.findall(FENCE.sub('', markdown.read_text(encoding='utf-8'))):
        if re.match(r'^[a-z]+:', target):
            continue  # a web address: not checked offline
        path, _, anchor = target.partition('#')
        dest = (markdown.parent / path).resolve() if path else markdown
        if root not in dest.parents and dest != root:
            problems.append(f'{target}: outside the repository')
        elif not dest.exists():
            problems.append(f'{target}: no such file')
        elif anchor and dest.suffix == '.md' and anchor not in anchors(dest):
            problems.append(f'{target}: no heading #{anchor} in {dest.relative_to(root)}')
    return problems


@pytest.mark.parametrize('markdown', doc_files(), ids=lambda p: str(p.relative_to(REPO)))
def test_links_resolve(markdown):
    assert broken_links(markdown) == []


def test_the_checker_finds_broken_links(tmp_path):
    page = tmp_path / 'page.md'
    page.write_text('# Title\n[a](missing.md) [b](#nowhere) [c](../../../etc/passwd) [d](#title) [e](page.md)\n')
    assert [p.split(':')[0] for p in broken_links(page, root=tmp_path)] == ['missing.md', '#nowhere',
                                                                             '../../../etc/passwd']


def test_readme_is_short():
    assert len((REPO / 'README.md').read_text(encoding='utf-8').splitlines()) <= 150


def test_no_file_points_outside_the_repository():
    tracked = subprocess.run(['git', 'ls-files'], cwd=REPO, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip('not a git checkout')
    pattern = re.compile(r'\.\./shared/|/work/shared|ROS_ENV_NOTES\.md|A2D2_FORMAT\.md')
    hits = []
    for name in tracked.stdout.split():
        path = REPO / name
        if name.startswith('third_party/') or not path.is_file() or path.suffix in ('.png', '.npz', '.pt'):
            continue
        for number, line in enumerate(path.read_text(encoding='utf-8', errors='ignore').splitlines(), 1):
            if pattern.search(line) and name != 'test/test_docs.py':
                hits.append(f'{name}:{number}')
    assert hits == []
