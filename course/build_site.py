"""Build the static site (`make site`): the executed notebooks, the README and the course documents.

The site mirrors the repository's layout, so that a relative link written for GitHub works on the
site once its ``.ipynb`` or ``.md`` ending becomes ``.html``:

- ``notebooks/NN_topic.ipynb`` (executed, outputs kept) -> ``notebooks/NN_topic.html``, through
  nbconvert's HTMLExporter;
- ``exercises/student/NN_topic.ipynb`` -> ``exercises/student/NN_topic.html``;
- ``README.md``, ``course/guide.md``, ``course/README.md`` -> ``.html``, through mistune (installed
  with nbconvert), headings given GitHub's anchors (``README.html#notation``);
- ``figures/`` is copied, and so is any other repository file a page links to (a module, a JSON
  result), so that the link opens it;
- ``index.html``: the reading order, with every page.

Every page gets a bar with links home, to the previous and to the next page. Nothing is fetched: the
build needs no network (viewing the pages loads MathJax from its CDN, as nbconvert's pages do).
Links that lead nowhere are printed and make the build fail.

Usage: ``python course/build_site.py [--out DIR]`` (default ``_site/``).
"""

from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
from pathlib import Path
from typing import NamedTuple
from urllib.parse import unquote, urlsplit

import mistune
import nbformat
from nbconvert import HTMLExporter

REPO = Path(__file__).resolve().parents[1]
COURSE_DOCUMENTS = ["course/guide.md", "course/README.md"]  # after the notebooks
URL_ATTRIBUTE = re.compile(r'\b(href|src)="([^"]*)"')
TITLE_HEADING = re.compile(r"^#\s+(.+)$", re.MULTILINE)

STYLE = """
body { font-family: system-ui, sans-serif; line-height: 1.5; margin: 0; color: #222; }
main.page { max-width: 52rem; margin: 0 auto; padding: 1rem 1.5rem 3rem; }
nav.site { background: #24292f; padding: 0.5rem 1.5rem; font-size: 0.95rem; }
nav.site a { color: #fff; margin-right: 1.2rem; text-decoration: none; }
table { border-collapse: collapse; } th, td { border: 1px solid #ccc; padding: 0.25rem 0.5rem; }
pre { background: #f6f8fa; padding: 0.75rem; overflow-x: auto; } img { max-width: 100%; }
code { background: #f6f8fa; padding: 0 0.2rem; }
"""


class Page(NamedTuple):
    source: Path  # relative to the repository
    title: str

    @property
    def target(self) -> Path:
        return self.source.with_suffix(".html")


def github_slug(text: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"<[^>]+>", "", html.unescape(text)).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


class _MarkdownRenderer(mistune.HTMLRenderer):
    """mistune's HTML, with raw HTML kept and an id on every heading (``-1``, ``-2`` on repeats)."""

    def __init__(self):
        super().__init__(escape=False)
        self._slugs: dict[str, int] = {}

    def heading(self, text: str, level: int, **attrs) -> str:
        slug = github_slug(text)
        repeats = self._slugs.get(slug, 0)
        self._slugs[slug] = repeats + 1
        anchor = f"{slug}-{repeats}" if repeats else slug
        return f'<h{level} id="{anchor}">{text}</h{level}>\n'


def render_markdown(text: str) -> str:
    markdown = mistune.create_markdown(
        renderer=_MarkdownRenderer(), plugins=["table", "strikethrough", "url"]
    )
    return markdown(text)


def _notebook_title(nb) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = TITLE_HEADING.search(cell.source)
            if match:
                return match[1].strip()
    return "Notebook"


def _markdown_title(text: str, fallback: str) -> str:
    match = TITLE_HEADING.search(text)
    return match[1].strip() if match else fallback


def collect_pages() -> list[Page]:
    """Every page in reading order: README, the notebooks, the exercises, the course documents."""
    pages = [Page(Path("README.md"), "minireformer")]
    for folder in ("notebooks", "exercises/student"):
        for path in sorted((REPO / folder).glob("[0-9][0-9]_*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            title = _notebook_title(nb)
            if folder != "notebooks":
                title = f"{title} (student version)"
            pages.append(Page(path.relative_to(REPO), title))
    for document in COURSE_DOCUMENTS:
        path = REPO / document
        if path.exists():
            pages.append(Page(Path(document), _markdown_title(path.read_text(), document)))
    return pages


def _relative(target: Path, page: Path) -> str:
    """The URL of the site file ``target`` from the page at ``page`` (both relative to the root)."""
    return Path(os.path.relpath(target, page.parent)).as_posix()


def _nav_bar(page: Page, previous: Page | None, following: Page | None) -> str:
    links = [f'<a href="{_relative(Path("index.html"), page.target)}">minireformer: contents</a>']
    if previous:
        links.append(f'<a href="{_relative(previous.target, page.target)}">&larr; previous</a>')
    if following:
        links.append(f'<a href="{_relative(following.target, page.target)}">next &rarr;</a>')
    return f'<nav class="site">{"".join(links)}</nav>'


def _standalone(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"/>\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"/>\n'
        f"<title>{html.escape(title)}</title>\n</head>\n"
        f'<body>\n<main class="page">\n{body}</main>\n</body>\n</html>\n'
    )


def _with_nav(page_html: str, nav: str) -> str:
    """``page_html`` with the site's style and ``nav`` at the top of its body."""
    top = f"\n<style>{STYLE}</style>\n{nav}"
    return re.sub(r"(<body[^>]*>)", lambda m: m[1] + top, page_html, count=1)


class LinkRewriter:
    """Turns a page's relative links into site links and records the files they need."""

    def __init__(self, pages: list[Page]):
        self.pages = {page.source for page in pages}
        self.copies: set[Path] = set()  # repository files the site must hold
        self.broken: list[str] = []

    def __call__(self, page: Page, page_html: str) -> str:
        def rewrite(match: re.Match) -> str:
            attribute, url = match[1], match[2]
            return f'{attribute}="{self._site_url(page, html.unescape(url))}"'

        return URL_ATTRIBUTE.sub(rewrite, page_html)

    def _site_url(self, page: Page, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme or parts.netloc or not parts.path:  # external, data: or #fragment
            return html.escape(url)
        target = Path(os.path.normpath(page.source.parent / unquote(parts.path)))
        fragment = f"#{parts.fragment}" if parts.fragment else ""
        if target in self.pages:
            return html.escape(_relative(target.with_suffix(".html"), page.target) + fragment)
        if not target.as_posix().startswith("..") and (REPO / target).is_file():
            self.copies.add(target)
        else:
            self.broken.append(f"{page.source}: {url}")
        return html.escape(url)


def _render(page: Page, exporter: HTMLExporter) -> str:
    if page.source.suffix == ".ipynb":
        nb = nbformat.read(REPO / page.source, as_version=4)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": page.title}})
        return body
    return _standalone(page.title, render_markdown((REPO / page.source).read_text()))


def _index(pages: list[Page]) -> str:
    items = "\n".join(
        f'<li><a href="{page.target.as_posix()}">{html.escape(page.title)}</a> '
        f"<small>({page.source.as_posix()})</small></li>"
        for page in pages
    )
    body = (
        "<h1>minireformer</h1>\n<p>The Reformer built from scratch in NumPy: the notebooks in "
        "reading order, their exercises and the instructor's guide.</p>\n"
        f"<ol>\n{items}\n</ol>\n"
    )
    nav = '<nav class="site"><a href="index.html">minireformer: contents</a></nav>'
    return _with_nav(_standalone("minireformer", body), nav)


def build_site(out: Path) -> list[str]:
    """Write the site into ``out`` (emptied first); return the links that lead nowhere."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    pages = collect_pages()
    exporter = HTMLExporter(template_name="lab")
    rewrite = LinkRewriter(pages)
    for number, page in enumerate(pages):
        previous = pages[number - 1] if number else None
        following = pages[number + 1] if number + 1 < len(pages) else None
        page_html = _with_nav(
            rewrite(page, _render(page, exporter)), _nav_bar(page, previous, following)
        )
        destination = out / page.target
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_text(page_html, encoding="utf-8")
    (out / "index.html").write_text(_index(pages), encoding="utf-8")
    shutil.copytree(REPO / "figures", out / "figures", dirs_exist_ok=True)
    for path in sorted(rewrite.copies):
        (out / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / path, out / path)
    return rewrite.broken


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "_site")
    args = parser.parse_args(argv)
    broken = build_site(args.out)
    for link in broken:
        print(f"broken link: {link}", file=sys.stderr)
    print(f"site written to {args.out} ({'no' if not broken else len(broken)} broken links)")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
